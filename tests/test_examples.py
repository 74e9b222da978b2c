"""Every script of examples/ runs with its tiny defaults, and so do the README's quickstarts."""

import re
import runpy

import numpy as np
import pytest

import sg_keras
from conftest import REPO

EXAMPLES = REPO / "examples"


def run_example(name, *args):
    """The example's `main(args)`, run in this process (TensorFlow is imported already)."""
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"example_{name}")["main"](
        list(args))


def test_every_example_is_tested():
    tested = {"mnist_fit", "custom_loop", "recurrent_copy", "complete_unlock",
              "decouple_application", "transformer_lm"}
    assert {path.stem for path in EXAMPLES.glob("*.py")} == tested


@pytest.mark.parametrize("mode", ["cdni"])
def test_mnist_fit(mode, tmp_path, capsys):
    result = run_example("mnist_fit", f"--mode={mode}", f"--data_path={tmp_path / 'none.npz'}")
    assert "synthetic digits" in capsys.readouterr().out   # the fallback without the file
    assert result["accuracy"] > 0.5


def test_custom_loop():
    assert run_example("custom_loop") > 0.8


def test_recurrent_copy():
    bits = run_example("recurrent_copy")
    assert set(bits) == {"bptt", "dni"} and all(np.isfinite(list(bits.values())))


def test_complete_unlock():
    assert float(run_example("complete_unlock")["accuracy"]) > 0.5


@pytest.mark.slow   # tracing MobileNetV2's training step takes most of a minute on 2 cores;
def test_decouple_application(capsys):   # test_readme_quickstart_decouple decouples it fast
    logs = run_example("decouple_application")
    assert "decoupled 10 residual sums" in capsys.readouterr().out   # MobileNetV2's *_add
    assert len([key for key in logs if key.startswith("sg_loss/")]) == 10


def test_transformer_lm():
    assert np.isfinite(run_example("transformer_lm"))


def readme_block(name):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return re.search(rf"<!-- {name} -->\s*```python\n(.*?)```", readme, re.S).group(1)


def test_readme_quickstart_fit(tmp_path, capsys):
    code = readme_block("quickstart-fit").replace('"dni.keras"', repr(str(tmp_path / "m.keras")))
    exec(compile(code, "README.md", "exec"), {})
    assert "sg_loss/" in capsys.readouterr().out and (tmp_path / "m.keras").exists()


def test_readme_quickstart_decouple():
    namespace = {}
    exec(compile(readme_block("quickstart-decouple"), "README.md", "exec"), namespace)
    model = namespace["model"]
    assert isinstance(model, sg_keras.DNIModel)
    assert any(isinstance(layer, sg_keras.DecoupledLayer) for layer in model.layers)
