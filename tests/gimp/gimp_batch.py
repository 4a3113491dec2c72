"""Runs inside GIMP 3 (python-fu-eval): calls the plug-in through the PDB, records what happened.

Reads cases from $SRGAN_E2E/cases.json and writes $SRGAN_E2E/results.json. Each case opens
an image, runs python-fu-srgan-upscale non-interactively on its first layer and, when asked,
exports the result.
"""

import json
import os

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

folder = os.environ["SRGAN_E2E"]
cases = json.load(open(os.path.join(folder, "cases.json")))
results = []
for case in cases:
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(case["input"]))
    layer = image.get_layers()[0]
    before = (image.get_width(), image.get_height())
    procedure = Gimp.get_pdb().lookup_procedure("python-fu-srgan-upscale")
    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    config.set_property("model", Gio.File.new_for_path(case["model"]) if case["model"] else None)
    config.set_property("tile", case.get("tile", 0))
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
        "layer": (layer.get_width(), layer.get_height()),
        "has_alpha": layer.has_alpha(),
        "undo_enabled": image.undo_is_enabled(),
    }
    if case.get("output"):
        Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(case["output"]), None)
    results.append(record)
    image.delete()
json.dump(results, open(os.path.join(folder, "results.json"), "w"))
