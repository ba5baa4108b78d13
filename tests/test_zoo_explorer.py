"""The zoo explorer page: its rows from the zoo table and the export report, and the page in a
real browser (headless Chromium over HTTP) filtering by ``?q=``."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from analysis.reporting.zoo_page import write_zoo_data, zoo_rows

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)

TABLE = """model,input,features,params_backbone,params_gap,params_flatten,params_token,gmacs_backbone,gmacs_gap,gmacs_flatten,gmacs_token,error
resnet18,224x224,512x7x7,11176512,11689512,36264512,,1.8186,1.8191,1.8437,,
vit_tiny_patch16_224,224x224,192x14x14,5524416,5717416,43156416,5717416,1.2579,1.2581,1.2954,1.2581,
"""


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    table, report = tmp_path / "zoo_table.csv", tmp_path / "export_coverage.json"
    table.write_text(TABLE)
    report.write_text(json.dumps({"records": [
        {"model": "resnet18", "head": "gap", "exported": True, "verified": True,
         "dynamic_axes": ["batch", "height", "width"]},
        {"model": "resnet18", "head": "flatten", "exported": False}]}))
    return table, report


def test_rows_are_each_head_against_the_backbone(tmp_path):
    rows = {(r["model"], r["head"]): r for r in zoo_rows(*_inputs(tmp_path))}
    assert set(rows) == {("resnet18", "gap"), ("resnet18", "flatten"),
                         ("vit_tiny_patch16_224", "gap"), ("vit_tiny_patch16_224", "flatten"),
                         ("vit_tiny_patch16_224", "token")}  # resnet18 has no class token
    gap = rows["resnet18", "gap"]
    assert gap["head_params"] == 513_000 and gap["head_macs"] == pytest.approx(0.0005e9)
    assert (gap["any_size"], gap["export"], gap["dynamic"]) == ("yes", "verified",
                                                                 "batch, height, width")
    assert (rows["resnet18", "flatten"]["any_size"], rows["resnet18", "flatten"]["export"]) == \
        ("no", "fails")
    assert rows["vit_tiny_patch16_224", "token"]["export"] == "not tried"
    data = json.loads(write_zoo_data(*_inputs(tmp_path), tmp_path / "zoo.json").read_text())
    assert data["rows"][0][3] == ["513 k", 513000]  # shown readable, sorted exact


def _site(tmp_path: Path) -> Path:
    """The zoo page built by MkDocs with the site's theme, on its own."""
    pytest.importorskip("mkdocs")
    docs = tmp_path / "docs" / "zoo"
    docs.mkdir(parents=True)
    for name in ("index.md", "zoo.js"):
        shutil.copy(ROOT / "docs" / "zoo" / name, docs / name)
    write_zoo_data(ROOT / "docs" / "zoo_table.csv", ROOT / "docs" / "export_coverage.json",
                   docs / "zoo.json")
    config = (ROOT / "mkdocs.yml").read_text().split("\nnav:")[0].replace("strict: true", "")
    (tmp_path / "mkdocs.yml").write_text(config + "\nnav:\n  - Zoo explorer: zoo/index.md\n")
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "-f",
                    str(tmp_path / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                   check=True, cwd=tmp_path, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    return tmp_path / "site"


def _rendered(site: Path, query: str) -> tuple[list[list[str]], str]:
    """The visible rows and the row count line, as headless Chromium renders the page."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/zoo/?q={query}"
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                              "--virtual-time-budget=15000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120).stdout
    finally:
        server.shutdown()
    assert 'data-ready="true"' in dom, "the page built its table"
    body = dom.split("<tbody>")[1].split("</tbody>")[0]
    visible = [re.findall(r"<td>(.*?)</td>", cells)
               for hidden, cells in re.findall(r"<tr( hidden=\"\")?>(.*?)</tr>", body)
               if not hidden]
    return visible, re.search(r'id="zoo-count">(.*?)<', dom).group(1)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
def test_the_page_filters_by_the_address_in_a_browser(tmp_path):
    site = _site(tmp_path)
    rows, said = _rendered(site, "resnet18")
    assert rows and all("resnet18" in r[0] for r in rows)
    assert {"gap", "gmp", "flatten"} <= {r[1] for r in rows if r[0] == "resnet18"}
    gap = next(r for r in rows if r[:2] == ["resnet18", "gap"])
    assert gap[3] == "513 k" and gap[5].endswith(" G")  # readable units
    assert said.startswith(f"{len(rows)} of ")
    assert _rendered(site, "no-such-model")[0] == []
