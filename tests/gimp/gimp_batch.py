"""Runs inside GIMP 3 (python-fu-eval): calls the plug-in through the PDB, records what happened.

Reads cases from $SRGAN_E2E/cases.json and writes $SRGAN_E2E/results.json. Each case opens
an image (optionally adding copies of its layer), runs python-fu-srgan-upscale on the selected
layers and, when asked, exports the result. A case named "probe" runs nothing: it records the
procedure's help and what its choice arguments accept.
"""

import json
import os

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

folder = os.environ["SRGAN_E2E"]
cases = json.load(open(os.path.join(folder, "cases.json")))
procedure = Gimp.get_pdb().lookup_procedure("python-fu-srgan-upscale")


def scratch_left() -> list:
    """What the plug-in left in the temporary folder."""
    temporary = os.environ.get("TMPDIR", "/tmp")
    return sorted(name for name in os.listdir(temporary) if name.startswith("srgan-gimp-"))


def probe() -> dict:
    config = procedure.create_config()
    accepted = {}
    for name, good, bad in [
        ("device", "cpu", "gpu7"),
        ("backend", "eager", "fast"),
        ("precision", "bf16", "fp8"),
        ("model", "file", "/some/where.pth"),
    ]:
        config.set_property(name, good)
        config.set_property(name, bad)  # refused with a warning: the property keeps its value
        spec = procedure.find_argument(name)
        nicks = Gimp.param_spec_choice_get_choice(spec).list_nicks()
        accepted[name] = {"kept": config.get_property(name), "nicks": nicks}
    return {"name": "probe", "help": procedure.get_help(), "help_id": procedure.get_help_id(), "choices": accepted}


results = []
for case in cases:
    if case["name"] == "probe":
        results.append(probe())
        continue
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(case["input"]))
    layer = image.get_layers()[0]
    layers = [layer]
    for _ in range(case.get("extra_layers", 0)):
        copy = layer.copy()
        image.insert_layer(copy, None, 0)
        layers.append(copy)
    before = (image.get_width(), image.get_height())
    config = procedure.create_config()
    config.set_property("run-mode", getattr(Gimp.RunMode, case.get("run_mode", "NONINTERACTIVE")))
    config.set_property("image", image)
    config.set_core_object_array("drawables", layers)
    config.set_property("model", case.get("model", "file" if case.get("model_file") else "default"))
    if case.get("model_file"):
        config.set_property("model-file", Gio.File.new_for_path(case["model_file"]))
    config.set_property("auto-tile", "tile" not in case)
    config.set_property("tile", case.get("tile", 512))
    config.set_property("device", "cpu")
    config.set_property("backend", case.get("backend", "auto"))
    config.set_property("scale", case.get("scale", 0.0))
    values = procedure.run(config)
    status = values.index(0)
    message = ""
    if status != Gimp.PDBStatusType.SUCCESS and values.length() > 1:
        message = str(values.index(1))
    record = {
        "name": case["name"],
        "success": status == Gimp.PDBStatusType.SUCCESS,
        "status": str(status),
        "message": message,
        "before": before,
        "after": (image.get_width(), image.get_height()),
        "layers": [(item.get_width(), item.get_height()) for item in layers],
        "layer": (layer.get_width(), layer.get_height()),
        "has_alpha": layer.has_alpha(),
        "undo_enabled": image.undo_is_enabled(),
        "scratch_left": scratch_left(),
    }
    if case.get("output"):
        Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(case["output"]), None)
    results.append(record)
    image.delete()
json.dump(results, open(os.path.join(folder, "results.json"), "w"))
