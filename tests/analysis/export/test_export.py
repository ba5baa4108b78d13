"""analysis.export: export, fallback, dynamic sizes, metadata, verification rule, latency.

The dynamo exporter takes several seconds even for timm's tiny test models, so most tests use
opset 17, which only the TorchScript exporter writes (about a second); the dynamo path has a
smoke test and a slow sweep over the feature layouts.
"""

from __future__ import annotations

import time
import types

import numpy as np
import onnx
import pytest
import torch

import surgery
from analysis import export as ex
from analysis.export import deps
from analysis.runtime import CpuBudgetExceeded, cpu_budget

SIZE = 64
VIT = "vit_tiny_patch16_224"
TINY_VIT = {"depth": 1, "img_size": SIZE}  # strict about its input size unless dynamic_img_size
TS_OPSET = 17  # below the dynamo exporter's range: TorchScript, fast


def _torch(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).numpy()


def _ort(path, x: torch.Tensor) -> np.ndarray:
    session = ex.onnx_session(path, threads=1)
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _input_dims(path) -> list:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


@pytest.fixture(scope="module")
def gmp_source():
    return ex.source_from_name("test_resnet", "gmp", num_classes=5, input_size=SIZE)


def test_missing_extra_names_the_extra(monkeypatch):
    monkeypatch.setattr(deps, "has_onnxruntime", False)
    with pytest.raises(ImportError, match=r"onnxruntime.*pip install -e '\.\[export\]'"):
        ex.require_export()
    ex.require_export(verify=False)  # onnx alone is enough to write a file
    monkeypatch.setattr(deps, "has_onnx", False)
    with pytest.raises(ValueError, match=r"needs onnx, which"):
        ex.require_export(verify=False)


@pytest.mark.parametrize("opset", [6, 24, "18"])
def test_unsupported_opsets_are_refused(opset):
    with pytest.raises(ValueError, match=r"unsupported opset .*dynamo 18-23, torchscript 7-20"):
        ex.check_opset(opset)


def test_torchscript_fallback_matches_torch_at_other_sizes(gmp_source, tmp_path):
    result = ex.export_onnx(gmp_source, tmp_path / "m.onnx", opset=TS_OPSET)
    assert result.exporter == "torchscript" and result.opset == TS_OPSET
    assert "writes opsets 18-23, not 17" in result.fallback_reason
    assert result.dynamic_axes == ["batch", "height", "width"] and result.fixed_reason is None
    assert _input_dims(result.path) == ["batch", 3, "height", "width"]
    assert result.file_bytes == result.path.stat().st_size
    x = torch.randn(5, 3, 80, 112)  # neither the traced batch nor the traced (square) size
    np.testing.assert_allclose(_ort(result.path, x), _torch(gmp_source.model, x),
                               rtol=1e-4, atol=1e-5)
    rows = ex.verify_onnx(gmp_source.model, result.path, [48, SIZE, 96])
    assert [r["input_size"] for r in rows] == [[48, 48], [64, 64], [96, 96]]
    assert all(r["ok"] and r["max_abs_diff"] <= ex.tolerance(1.0) for r in rows)


def test_flatten_gets_fixed_sizes_and_refused_rows(tmp_path):
    source = ex.source_from_name("test_resnet", "flatten", num_classes=3, input_size=SIZE)
    result = ex.export_onnx(source, tmp_path / "f.onnx", opset=TS_OPSET)
    assert result.dynamic_axes == ["batch"]
    assert "flatten head is built for 64x64 inputs" in result.fixed_reason
    assert _input_dims(result.path) == ["batch", 3, SIZE, SIZE]
    rows = ex.verify_onnx(source.model, result.path, [48, SIZE],
                          fixed_reason=result.fixed_reason)
    assert ex.is_refused(rows[0]) and "takes 64x64 inputs only" in rows[0]["error"]
    assert rows[1]["ok"] and not ex.is_refused(rows[1])


def test_dynamic_plan_follows_head_and_backbone():
    fixed_vit = ex.source_from_name(VIT, "gap", **TINY_VIT)
    plan = ex.plan_dynamic(fixed_vit)
    assert plan.axes == ("batch",) and "dynamic_img_size=True" in plan.reason
    assert f"{VIT} refuses other input sizes (96x96: Input height (96)" in plan.reason
    any_vit = ex.source_from_name(VIT, "gap", dynamic_img_size=True, **TINY_VIT)
    assert ex.plan_dynamic(any_vit).axes == ("batch", "height", "width")
    assert ex.plan_dynamic(any_vit, "batch").axes == ("batch",)
    assert ex.plan_dynamic(any_vit, "none").axes == ()
    coat = ex.plan_dynamic(ex.source_from_name("coat_lite_tiny", "gap"))  # no such timm option
    assert coat.axes == ("batch",) and "coat_lite_tiny refuses other input sizes" in coat.reason
    assert "dynamic_img_size" not in coat.reason
    with pytest.raises(ValueError, match="unknown dynamic mode 'some'; choose from auto"):
        ex.plan_dynamic(any_vit, "some")


def test_fixed_batch_export_runs_at_that_batch_only(gmp_source, tmp_path):
    result = ex.export_onnx(gmp_source, tmp_path / "n.onnx", dynamic="none", opset=TS_OPSET)
    assert result.dynamic_axes == [] and _input_dims(result.path) == [1, 3, SIZE, SIZE]
    latency = ex.compare_latency(gmp_source.model, result.path, (SIZE, SIZE), warmup=0,
                                 repeats=1)
    assert latency["onnxruntime"]["b8"] is None  # the file takes batch 1 only
    assert latency["onnxruntime"]["b1"] > 0 and latency["torch"]["b8"] > 0


def _run_dir(tmp_path, model):
    run = tmp_path / "run"
    run.mkdir()
    surgery.save(model, run / "best.pt")
    surgery.write_json(run / "config.json", {"resolved": {
        "img_size": SIZE, "in_chans": 3, "classes": ["cat", "dog", "eel"],
        "mean": [0.25, 0.5, 0.75], "std": [0.1, 0.2, 0.3]}})
    return run


def test_metadata_round_trips_from_a_run_directory(tmp_path):
    model = surgery.swap_head("test_resnet", head="nin", num_classes=3, input_size=SIZE)
    source = ex.source_from_path(_run_dir(tmp_path, model))
    assert source.origin == "run" and source.input_size == (SIZE, SIZE)
    result = ex.export_onnx(source, tmp_path / "run.onnx", opset=TS_OPSET)
    meta = ex.read_metadata(result.path)
    assert meta["class_names"] == ["cat", "dog", "eel"] and meta["num_classes"] == 3
    assert meta["mean"] == [0.25, 0.5, 0.75] and meta["std"] == [0.1, 0.2, 0.3]
    assert meta["input_size"] == "64x64" and meta["input_layout"] == "NCHW"
    assert meta["channels"] == 3 and meta["head"] == "nin" and meta["model"] == "test_resnet"
    assert meta["head_spec"] == "nin"
    assert meta["dynamic_axes"] == ["batch", "height", "width"] == result.dynamic_axes
    x = torch.randn(2, 3, SIZE, SIZE)  # the run's weights, not a fresh model's
    np.testing.assert_allclose(_ort(result.path, x), _torch(model, x), rtol=1e-4, atol=1e-5)


def test_spp_exports_with_dynamic_sizes_and_uneven_bins(tmp_path):
    # test_resnet's grid is 2x2 at 64 px, 3x3 at 96 (level 2 cuts 3 cells into bins of 2 and 2,
    # overlapping) and 5x5 at 160; at 32 px (1x1) spp:levels=1x2 refuses in torch
    source = ex.source_from_name("test_resnet", "spp:levels=1x2:pool=avg", num_classes=3,
                                 input_size=SIZE)
    assert source.head == "spp" and source.head_spec == "spp:levels=1x2:pool=avg"
    result, rows = ex.export_verified(source, tmp_path / "spp.onnx", [32, SIZE, 96, 160],
                                      opset=TS_OPSET)
    assert result.dynamic_axes == ["batch", "height", "width"] and result.fixed_reason is None
    assert ex.is_refused(rows[0]) and "spp:levels=1x2 needs a feature grid" in rows[0]["error"]
    assert all(r["ok"] for r in rows[1:]), rows
    x = torch.randn(2, 3, 96, 128)  # a 3x4 grid: uneven bins in both directions
    np.testing.assert_allclose(_ort(result.path, x), _torch(source.model, x), rtol=1e-4,
                               atol=1e-5)
    meta = ex.read_metadata(result.path)
    assert meta["head"] == "spp" and meta["head_spec"] == "spp:levels=1x2:pool=avg"


@pytest.mark.slow
def test_spp_dynamo_export_keeps_height_and_width_dynamic(tmp_path):
    source = ex.source_from_name("test_resnet", "spp:levels=1x2", num_classes=3, input_size=SIZE)
    result, rows = ex.export_verified(source, tmp_path / "spp.onnx", [SIZE, 96, 160])
    assert result.exporter == "dynamo" and result.fallback_reason is None
    assert result.dynamic_axes == ["batch", "height", "width"] and result.fixed_reason is None
    assert all(r["ok"] for r in rows), rows


def test_timm_normalisation_when_not_from_a_run(gmp_source):
    cfg = gmp_source.model.backbone.pretrained_cfg
    assert gmp_source.mean == tuple(cfg["mean"]) and gmp_source.std == tuple(cfg["std"])
    assert gmp_source.class_names is None


def test_failed_export_leaves_no_file(gmp_source, tmp_path, monkeypatch):
    from analysis.export import exporter

    def broken(name):
        def fail(*args, **kwargs):
            raise RuntimeError(f"{name} cannot do this")
        return fail

    monkeypatch.setattr(exporter, "_dynamo", broken("dynamo"))
    monkeypatch.setattr(exporter, "_torchscript", broken("torchscript"))
    out = tmp_path / "m.onnx"
    with pytest.raises(ex.ExportError, match=r"dynamo exporter: dynamo cannot do this; "
                                             r"TorchScript exporter: torchscript cannot"):
        ex.export_onnx(gmp_source, out)
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"previous")
    with pytest.raises(ex.ExportError):
        ex.export_onnx(gmp_source, out)
    assert out.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [out]


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_dynamo_export_past_its_cpu_budget_falls_back_to_torchscript(gmp_source, tmp_path,
                                                                      monkeypatch):
    from analysis.export import exporter

    def endless(*args, **kwargs):
        _spin(30)  # an LSTM unrolled over symbolic sizes: no result for a long time
        raise AssertionError("the budget should have stopped this")

    monkeypatch.setattr(exporter, "_dynamo", endless)
    result = ex.export_onnx(gmp_source, tmp_path / "m.onnx", dynamo_budget=0.3)
    assert result.exporter == "torchscript"
    assert result.fallback_reason == "no result within 0.3 CPU s"
    assert result.dynamic_axes == ["batch", "height", "width"]


def test_an_invalid_dynamo_graph_falls_back_to_torchscript(gmp_source, tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def broken(*args, dynamo=False, **kwargs):  # a node input no node produces, as for gemma4
        program = real_export(*args, dynamo=dynamo, **kwargs)
        if not dynamo:
            return program
        proto = program.model_proto
        proto.graph.node[-1].input[0] = "produced_by_nobody"
        return types.SimpleNamespace(model_proto=proto)

    monkeypatch.setattr(torch.onnx, "export", broken)
    result = ex.export_onnx(gmp_source, tmp_path / "m.onnx")
    assert result.exporter == "torchscript"
    assert result.fallback_reason.startswith("it wrote an invalid graph (")
    assert "produced_by_nobody" in result.fallback_reason
    session = ex.onnx_session(result.path, threads=1)  # the file written is the one that loads
    x = torch.randn(2, 3, *gmp_source.input_size)
    y = session.run(None, {"input": x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(y), gmp_source.model.eval()(x), atol=1e-4)


def test_a_callers_cpu_budget_passes_through_the_dynamo_budget(gmp_source, tmp_path,
                                                               monkeypatch):
    from analysis.export import exporter

    monkeypatch.setattr(exporter, "_dynamo", lambda *a, **k: _spin(30))
    with pytest.raises(CpuBudgetExceeded) as spent, cpu_budget(0.3) as outer:
        ex.export_onnx(gmp_source, tmp_path / "m.onnx", dynamo_budget=5)
    assert spent.value.budget is outer  # not taken for a dynamo failure and TorchScript's turn
    assert not (tmp_path / "m.onnx").exists()


def test_bad_inputs_are_one_line_errors(gmp_source, tmp_path):
    weights = tmp_path / "w.pt"
    torch.save(gmp_source.model.state_dict(), weights)
    with pytest.raises(ValueError, match="is not a headswap model file"):
        ex.source_from_path(weights)
    with pytest.raises(FileNotFoundError, match="no model file or run directory"):
        ex.source_from_path(tmp_path / "missing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a fine-tuning run directory"):
        ex.source_from_path(tmp_path / "empty")
    with pytest.raises(ValueError, match="is a directory"):
        ex.export_onnx(gmp_source, tmp_path)
    with pytest.raises(ValueError, match="is a file, not a directory"):
        ex.export_onnx(gmp_source, weights / "m.onnx")
    flat = ex.source_from_name("test_resnet", "flatten", input_size=SIZE)
    flat.input_size = (96, 96)
    with pytest.raises(ValueError, match="refuses its example input 96x96: Flatten head was built"):
        ex.export_onnx(flat, tmp_path / "f.onnx")


class _Session:
    """Stands in for an onnxruntime session: returns torch's output plus ``delta``."""

    def __init__(self, model, delta):
        self.model, self.delta = model, delta

    def get_inputs(self):
        return [type("Input", (), {"name": "input", "shape": ["batch", 3, "height", "width"]})]

    def run(self, names, feed):
        return [_torch(self.model, torch.from_numpy(feed["input"])) + self.delta]


def test_tolerance_rule_at_its_boundary(gmp_source):
    model = gmp_source.model
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    top = float(np.abs(_torch(model, x)).max())
    limit = 1e-4 * top + 1e-5
    assert ex.tolerance(top) == pytest.approx(limit)
    inside = ex.verify_size(model, _Session(model, 0.9 * limit), (SIZE, SIZE), 3, 3)
    outside = ex.verify_size(model, _Session(model, 1.1 * limit), (SIZE, SIZE), 3, 3)
    assert inside["ok"] and inside["max_abs_diff"] == pytest.approx(0.9 * limit, rel=1e-3)
    assert inside["max_rel_diff"] == pytest.approx(0.9 * limit / top, rel=1e-3)
    assert not outside["ok"] and not ex.is_refused(outside)
    assert "> tolerance" in outside["error"]


@pytest.mark.slow
@pytest.mark.smoke
def test_dynamo_export_with_dynamic_height_and_width(gmp_source, tmp_path):
    result = ex.export_onnx(gmp_source, tmp_path / "d.onnx")
    assert result.exporter == "dynamo" and result.fallback_reason is None
    assert result.opset == ex.DEFAULT_OPSET
    assert _input_dims(result.path) == ["batch", 3, "height", "width"]
    x = torch.randn(5, 3, 80, 112)
    np.testing.assert_allclose(_ort(result.path, x), _torch(gmp_source.model, x),
                               rtol=1e-4, atol=1e-5)


# one per feature layout: tokens (dynamic only with dynamic_img_size), NHWC, NCL, a list
LAYOUTS = [
    (VIT, "gap", {"dynamic_img_size": True, **TINY_VIT}, SIZE, True),
    (VIT, "nin", TINY_VIT, SIZE, False),
    ("test_mambaout", "nin", {}, SIZE, True),
    ("efficientvim_m1", "gmp", {}, 128, True),  # at 64 its last grid is 1x1: see below
    ("crossvit_tiny_240", "gap", {"img_size": 120}, 120, False),  # torch.export fixes H, W
]


@pytest.mark.slow
@pytest.mark.parametrize("name,head,options,size,dynamic_hw", LAYOUTS,
                         ids=[f"{n}-{h}-{'dyn' if 'dynamic_img_size' in o else 'plain'}"
                              for n, h, o, _, _ in LAYOUTS])
def test_dynamo_export_per_layout(name, head, options, size, dynamic_hw, tmp_path):
    source = ex.source_from_name(name, head, num_classes=4, input_size=size, **options)
    result = ex.export_onnx(source, tmp_path / "m.onnx")
    assert ("height" in result.dynamic_axes) == dynamic_hw
    assert (result.fixed_reason is None) == dynamic_hw
    rows = ex.verify_onnx(source.model, result.path, [size, size + 32],
                          fixed_reason=result.fixed_reason)
    assert rows[0]["ok"], rows[0]
    assert rows[1]["ok"] if dynamic_hw else ex.is_refused(rows[1])


def test_dynamic_sizes_that_compute_wrongly_are_re_exported_fixed(gmp_source, tmp_path,
                                                                  monkeypatch):
    from analysis.export import pipeline

    real = pipeline.verify_onnx

    def only_built_size_passes(model, path, sizes, *args, **kwargs):
        rows = real(model, path, sizes, *args, **kwargs)
        if "height" in _input_dims(path):  # pretend the dynamic graph breaks at other sizes
            for r in rows[1:]:
                r.update(ok=False, error="onnxruntime: shape mismatch")
        return rows

    monkeypatch.setattr(pipeline, "verify_onnx", only_built_size_passes)
    result, rows = ex.export_verified(gmp_source, tmp_path / "m.onnx", [48, SIZE], opset=TS_OPSET)
    assert result.dynamic_axes == ["batch"] and _input_dims(result.path)[2:] == [SIZE, SIZE]
    assert result.fixed_reason == ("the torchscript export with dynamic height and width fails "
                                   "at 48x48 (onnxruntime: shape mismatch)")
    assert [r["input_size"][0] for r in rows] == [48, SIZE]
    assert ex.is_refused(rows[0]) and rows[1]["ok"]
    assert ex.read_metadata(result.path)["dynamic_axes"] == ["batch"]


@pytest.mark.slow
def test_a_1x1_grid_at_the_example_size_ends_fixed(tmp_path):
    # torch.export traces efficientvim's 1x1 grid at 64 px as a constant: the dynamic file fails
    # at 96 px in onnxruntime, so the pipeline exports again with fixed sizes
    source = ex.source_from_name("efficientvim_m1", "gmp", num_classes=4, input_size=SIZE)
    result, rows = ex.export_verified(source, tmp_path / "m.onnx", [SIZE, 96])
    assert result.exporter == "dynamo" and result.dynamic_axes == ["batch"]
    assert "with dynamic height and width fails at 96x96" in result.fixed_reason
    assert rows[0]["ok"] and ex.is_refused(rows[1])
