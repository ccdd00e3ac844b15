"""``tb-activations explain`` through :func:`~tb_activations.cli.main` (in this process: a
subprocess spends 10-20 s importing TensorFlow on two cores); PNGs compared with the
library's maps."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tb_activations.cli import main
from tests.conftest import read_run
from tests.test_cli import image_dir, model_file  # noqa: F401


def run(*args) -> int:
    return main([str(a) for a in args])


def test_explain_writes_pngs_and_events(model_file, image_dir, tmp_path, capsys):  # noqa: F811
    import keras

    from tb_activations import Probes
    from tb_activations.attribution import grad_cam
    from tb_activations.attribution.step import overlay_map

    out, logs = tmp_path / "png", tmp_path / "logs"
    code = run(
        "explain",
        model_file,
        image_dir,
        "--method",
        "gradcam",
        "saliency",
        "--class",
        "1",
        "--png-dir",
        out,
        "--log-dir",
        logs,
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "PNG files: 4" in captured.out
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == [
        "cat/gradcam_class1.png",
        "cat/saliency_class1.png",
        "dog/gradcam_class1.png",
        "dog/saliency_class1.png",
    ]
    # The same maps as the library's, drawn the same way (PNG is lossless).
    model = keras.models.load_model(model_file, compile=False)
    probes = Probes.from_files([image_dir / "cat.png", image_dir / "dog.jpg"], target_size=(16, 16))
    maps = grad_cam(model, probes.inputs, 1)  # the default layer: backbone/conv_b
    assert maps.shape == (2, 8, 8)
    for i, name in enumerate(["cat", "dog"]):
        png = np.asarray(Image.open(out / name / "gradcam_class1.png").convert("RGB"))
        np.testing.assert_array_equal(png, overlay_map(probes.display[i], maps[i]))
    tags = read_run(logs / "attribution").Tags()["tensors"]
    assert {"attribution/gradcam/overlay", "attribution/saliency/maps"} <= set(tags)


def test_explain_user_errors(model_file, image_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "png"
    for args, fragments in [
        (("--class", "5"), ("class 5 is out of range", "[0, 1]")),
        (("--class", "cat"), ("--class must be a class index",)),
        (("--layer", "gap"), ("'gap' has output shape",)),
        (("--method", "nope"), ("invalid choice",)),
    ]:
        assert run("explain", model_file, image_dir, "--png-dir", out, *args) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and all(f in err for f in fragments), err
    assert not out.exists() or not list(out.rglob("*.png"))
