#!/usr/bin/env python3
"""GIMP 3 plug-in: Filters → Enhance → SRGAN 4×.

Upscales the selected layers with the `srgan` command recorded by `srgan gimp install`: each
layer's pixels go out through its GEGL buffer into a PAM file at the image's precision (8 or
16 bits), `srgan upscale --json` reports progress for GIMP's progress bar, and the results come
back the same way. The image is scaled by the model's factor (or the chosen scale, for which
srgan resamples the model's output) and the selected layers receive
their upscaled pixels, all in one undo step; on any failure the image is left untouched and
the CLI's one-line reason is shown.
"""

import sys
import tempfile
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GimpUi, GLib, GObject  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge import (  # noqa: E402
    BridgeError,
    Pixels,
    build_arguments,
    output_size,
    read_pam,
    run_upscale,
    srgan_command,
    write_pam,
)

PROCEDURE = "python-fu-srgan-upscale"
EIGHT_BIT = (Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL)


def babl_format(image, drawable) -> tuple[str, int, bool]:
    """The GEGL format to move a layer's pixels in, its channel count, and whether 16-bit."""
    gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
    alpha = drawable.has_alpha()
    deep = image.get_precision() not in EIGHT_BIT
    components = ("Y'" if gray else "R'G'B'") + ("A" if alpha else "")
    channels = (1 if gray else 3) + (1 if alpha else 0)
    return f"{components} {'u16' if deep else 'u8'}", channels, deep


def upscale_layers(image, layers, model: str, tile: int, device: str, backend: str, scale: float) -> list:
    """Run every layer through srgan; returns (layer, format, Pixels) without touching the image."""
    command = srgan_command(Path(__file__).resolve().parent)
    results = []
    with tempfile.TemporaryDirectory(prefix="srgan-gimp-") as scratch:
        for index, layer in enumerate(layers):
            fmt, channels, deep = babl_format(image, layer)
            buffer = layer.get_buffer()
            extent = buffer.get_extent()
            data = buffer.get(extent, 1.0, fmt, Gegl.AbyssPolicy.NONE)
            source, target = Path(scratch) / f"layer{index}.pam", Path(scratch) / f"layer{index}_out.pam"
            write_pam(source, Pixels(extent.width, extent.height, channels, deep, bytes(data)))

            def progress(fraction: float, done: int = index) -> None:
                Gimp.progress_update((done + fraction) / len(layers))

            arguments = build_arguments(command, source, target, model, tile, device, backend, scale)
            run_upscale(arguments, progress)
            results.append((layer, fmt, read_pam(target), extent))
    return results


def apply_results(image, results, scale: float) -> None:
    """Scale the image and write the upscaled layers, as one undo step.

    scale: the factor asked for; 0 takes the model's, which the results show.
    """
    if not scale:
        scales = {pixels.width // extent.width for _, _, pixels, extent in results}
        scale = scales.pop() if len(scales) == 1 else 0
    if scale <= 0 or any(
        (pixels.width, pixels.height) != output_size(extent.width, extent.height, scale)
        for _, _, pixels, extent in results
    ):
        raise BridgeError("srgan returned layers of other sizes than the scale asks for")
    image.undo_group_start()
    try:
        image.scale(*output_size(image.get_width(), image.get_height(), scale))
        for layer, fmt, pixels, _ in results:
            if (layer.get_width(), layer.get_height()) != (pixels.width, pixels.height):
                layer.scale(pixels.width, pixels.height, True)  # GIMP may round a layer's new size otherwise
            buffer = layer.get_buffer()
            buffer.set(Gegl.Rectangle.new(0, 0, pixels.width, pixels.height), fmt, pixels.data)
            buffer.flush()
            layer.update(0, 0, pixels.width, pixels.height)
    finally:
        image.undo_group_end()


class SrganUpscale(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES)
        procedure.set_menu_label("SRGAN 4×")
        procedure.add_menu_path("<Image>/Filters/Enhance")
        procedure.set_documentation(
            "Upscale the selected layers with SRGAN",
            "Scales the image by the model's factor (4× for the bundled model) or the chosen scale and replaces "
            "each selected layer with its super-resolved pixels, keeping alpha and bit depth. Runs the srgan "
            "command line.",
            name,
        )
        procedure.set_attribution("srgan", "srgan", "2026")
        procedure.add_file_argument(
            "model",
            "Model file",
            "SRGAN model (.safetensors or .pth); none: the bundled one",
            Gimp.FileChooserAction.OPEN,
            True,
            None,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_int_argument(
            "tile",
            "Tile size",
            "Tile size in input pixels, at least 48; 0: automatic",
            0,
            4096,
            0,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_string_argument(
            "device", "Device", "auto, cpu, cuda or cuda:N", "auto", GObject.ParamFlags.READWRITE
        )
        procedure.add_string_argument(
            "backend", "Backend", "auto, eager, compiled or tensorrt", "auto", GObject.ParamFlags.READWRITE
        )
        procedure.add_double_argument(
            "scale",
            "Scale",
            "Output size as a multiple of the input, 1 to 16; 0: the model's factor",
            0.0,
            16.0,
            0.0,
            GObject.ParamFlags.READWRITE,
        )
        return procedure

    def run(self, procedure, run_mode, image, drawables, config, data):
        if run_mode == Gimp.RunMode.INTERACTIVE:
            GimpUi.init("srgan_upscale")
            dialog = GimpUi.ProcedureDialog.new(procedure, config, "SRGAN 4×")
            dialog.fill(None)
            if not dialog.run():
                dialog.destroy()
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            dialog.destroy()
        layers = [drawable for drawable in drawables if isinstance(drawable, Gimp.Layer) and not drawable.is_group()]
        if not layers:
            return self._fail(procedure, "select one or more (non-group) layers to upscale")
        scale = config.get_property("scale")
        if 0 < scale < 1:
            return self._fail(procedure, f"scale {scale:g} is below 1; use 1 to 16, or 0 for the model's factor")
        Gimp.progress_init("SRGAN upscaling")
        try:
            model = config.get_property("model")
            results = upscale_layers(
                image,
                layers,
                model.get_path() if model is not None else "",
                config.get_property("tile"),
                config.get_property("device"),
                config.get_property("backend"),
                scale,
            )
            apply_results(image, results, scale)
        except BridgeError as error:
            return self._fail(procedure, str(error))
        Gimp.progress_end()
        Gimp.displays_flush()
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())

    @staticmethod
    def _fail(procedure, message: str):
        Gimp.message(f"SRGAN 4×: {message}")
        error = GLib.Error.new_literal(Gimp.PlugIn.error_quark(), message, 0)
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, error)


Gimp.main(SrganUpscale.__gtype__, sys.argv)
