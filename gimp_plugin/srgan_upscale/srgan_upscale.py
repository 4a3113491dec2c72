#!/usr/bin/env python3
"""GIMP 3 plug-in: Filters → Enhance → SRGAN 4×.

Upscales the selected layers with the `srgan` command recorded by `srgan gimp install`: each
layer's pixels go out through its GEGL buffer into a PAM file at the image's precision (8 or
16 bits), one `srgan upscale --json` call upscales them all and reports progress for GIMP's
progress bar, and the results come back the same way. The image is scaled by the model's factor
(or the chosen scale, for which srgan resamples the model's output) and the selected layers
receive their upscaled pixels, all in one undo step; on any failure the image is left untouched
and the CLI's one-line reason is shown, with advice in the dialog's terms.
"""

import sys
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GimpUi, Gio, GLib, GObject  # noqa: E402

PLUGIN_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(PLUGIN_DIR))
from bridge import (  # noqa: E402
    BACKEND_LABELS,
    DEFAULT_MODEL,
    DEVICE_LABELS,
    DEVICES,
    MAX_TILE,
    MIN_TILE,
    OTHER_MODEL,
    PRECISION_LABELS,
    BridgeError,
    Choices,
    Pixels,
    Request,
    Scratch,
    list_models,
    load_choices,
    model_folders,
    output_size,
    read_pam,
    run_upscale,
    save_choices,
    srgan_command,
    write_pam,
)

PROCEDURE = "python-fu-srgan-upscale"
HELP_ID = PROCEDURE  # GIMP falls back to the procedure name when it reloads the plug-in from its cache
HELP_DOMAIN = "srgan-upscale"
EIGHT_BIT = (Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL)

HELP_TEXT = """\
Scales the image by the model's factor (4× for the bundled model) or by the chosen Scale, and replaces \
each selected layer with its super-resolved pixels, keeping alpha, grayscale and 16-bit depth; one undo step. \
All selected layers go through one run of the srgan command line.

Model: the bundled 4× SRGAN model, a model from srgan's model folders (~/.local/share/srgan/models or \
$SRGAN_MODELS_DIR; 'srgan models' lists them), or another file (.safetensors or .pth) chosen in Model file.
Tile size: the image is upscaled in square tiles of this many input pixels. Automatic: 384 on a CPU \
for SRGAN models (160 for other architectures and for compiled engines), 512 on a GPU. Larger tiles are a \
little faster and need more memory; on 'out of memory' choose a smaller one.
Device: auto uses the first NVIDIA GPU when there is one, else the CPU. A GPU is many times faster.
Backend: auto uses a compiled or TensorRT engine when 'srgan build-engine' has built one, else eager PyTorch.
Precision: auto is fp16 on a GPU and fp32 on a CPU; bf16 is about twice as fast on CPUs with native bf16.
Scale: 0 keeps the model's own factor; 1 to 16 resamples the model's output to that size.

Memory: srgan holds the layer, its upscaled result (16× the pixels at 4×) and one batch of tiles; \
GIMP then holds the upscaled image. A 12-megapixel layer becomes 192 megapixels at 4×.
Speed: about 0.7 output megapixels per second per two CPU cores (fp32), over 100 on a recent GPU."""


def choice(labels: dict) -> "Gimp.Choice":
    """A Gimp.Choice of nick: label pairs, in order."""
    made = Gimp.Choice.new()
    for index, (nick, label) in enumerate(labels.items()):
        made.add(nick, index, label, "")
    return made


def last_choices_path() -> Path:
    return Path(Gimp.directory()) / "srgan-upscale-last.json"


def choices_from(config) -> Choices:
    model_file = config.get_property("model-file")
    return Choices(
        model=config.get_property("model"),
        model_file=model_file.get_path() if model_file is not None else "",
        auto_tile=config.get_property("auto-tile"),
        tile=config.get_property("tile"),
        device=config.get_property("device"),
        backend=config.get_property("backend"),
        precision=config.get_property("precision"),
        scale=config.get_property("scale"),
    )


def restore_choices(procedure, config, choices: Choices) -> None:
    """Put saved values back into the config, skipping any the procedure no longer accepts
    (a model that left the model folders)."""
    for name, value in (
        ("model", choices.model),
        ("device", choices.device),
        ("backend", choices.backend),
        ("precision", choices.precision),
    ):
        spec = procedure.find_argument(name)
        if spec is not None and Gimp.param_spec_choice_get_choice(spec).is_valid(value):
            config.set_property(name, value)
    config.set_property("model-file", Gio.File.new_for_path(choices.model_file) if choices.model_file else None)
    config.set_property("auto-tile", bool(choices.auto_tile))
    config.set_property("tile", min(MAX_TILE, max(MIN_TILE, int(choices.tile))))
    config.set_property("scale", min(16.0, max(0.0, float(choices.scale))))


def babl_format(image, drawable) -> tuple[str, int, bool]:
    """The GEGL format to move a layer's pixels in, its channel count, and whether 16-bit."""
    gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
    alpha = drawable.has_alpha()
    deep = image.get_precision() not in EIGHT_BIT
    components = ("Y'" if gray else "R'G'B'") + ("A" if alpha else "")
    channels = (1 if gray else 3) + (1 if alpha else 0)
    return f"{components} {'u16' if deep else 'u8'}", channels, deep


def upscale_layers(image, layers, request: Request) -> list:
    """Run every layer through one srgan process; returns (layer, format, Pixels, extent) without
    touching the image. The scratch files are gone when this returns or raises."""
    command = srgan_command(PLUGIN_DIR)
    with Scratch() as scratch:
        sources, moved = [], []
        for index, layer in enumerate(layers):
            fmt, channels, deep = babl_format(image, layer)
            buffer = layer.get_buffer()
            extent = buffer.get_extent()
            data = buffer.get(extent, 1.0, fmt, Gegl.AbyssPolicy.NONE)
            source = scratch.path / f"layer{index}.pam"
            write_pam(source, Pixels(extent.width, extent.height, channels, deep, bytes(data)))
            sources.append(source)
            moved.append((layer, fmt, extent))
        outputs = run_upscale(command, sources, scratch, request, Gimp.progress_update)
        return [(layer, fmt, read_pam(output), extent) for (layer, fmt, extent), output in zip(moved, outputs)]


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
    models: dict = {}  # nick: path of the models offered by name, filled when the procedure is made

    def do_query_procedures(self):
        help_folder = PLUGIN_DIR / "help"
        if help_folder.is_dir():
            self.set_help_domain(HELP_DOMAIN, Gio.File.new_for_path(str(help_folder)))
        return [PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES)
        procedure.set_menu_label("SRGAN 4×")
        procedure.add_menu_path("<Image>/Filters/Enhance")
        procedure.set_documentation("Upscale the selected layers with SRGAN", HELP_TEXT, HELP_ID)
        procedure.set_attribution("srgan", "srgan", "2026")
        self._add_model_arguments(procedure)
        procedure.add_boolean_argument(
            "auto-tile",
            "_Automatic tile size",
            "Let srgan choose the tile size: 384 on a CPU for SRGAN models, else 160; 512 on a GPU",
            True,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_int_argument(
            "tile",
            "_Tile size",
            f"Side of the square tiles in input pixels, {MIN_TILE} to {MAX_TILE}, when not automatic;"
            " larger is a little faster and needs more memory",
            MIN_TILE,
            MAX_TILE,
            512,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_choice_argument(
            "device", "_Device", "Where the network runs", choice(DEVICE_LABELS), "auto", GObject.ParamFlags.READWRITE
        )
        procedure.add_choice_argument(
            "backend",
            "_Backend",
            "How the network runs; compiled and tensorrt engines are built once by 'srgan build-engine'",
            choice(BACKEND_LABELS),
            "auto",
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_choice_argument(
            "precision",
            "_Precision",
            "Arithmetic precision of the network",
            choice(PRECISION_LABELS),
            "auto",
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_double_argument(
            "scale",
            "Scal_e (0: the model's factor)",
            "Output size as a multiple of the input, 1 to 16; 0 keeps the model's own factor (4× for the bundled"
            " model). Other factors resample the model's output.",
            0.0,
            16.0,
            0.0,
            GObject.ParamFlags.READWRITE,
        )
        return procedure

    def _add_model_arguments(self, procedure) -> None:
        """The Model choice (bundled, the model folders' models by name, another file) and Model file."""
        try:
            models = list_models(
                srgan_command(PLUGIN_DIR), model_folders(PLUGIN_DIR), Path(Gimp.directory()) / "srgan-models.json"
            )
        except BridgeError:
            models = []  # a broken install is reported when the plug-in runs
        SrganUpscale.models = {entry.nick: entry.path for entry in models}
        labels = {DEFAULT_MODEL: "Bundled SRGAN 4×"}
        labels.update({entry.nick: entry.label for entry in models})
        labels[OTHER_MODEL] = "Another file…"
        procedure.add_choice_argument(
            "model",
            "_Model",
            "The bundled model, a model from srgan's model folders, or another file chosen in Model file",
            choice(labels),
            DEFAULT_MODEL,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_file_argument(
            "model-file",
            "Model _file",
            "Used when Model is 'Another file…': an SRGAN model (.safetensors or .pth)",
            Gimp.FileChooserAction.OPEN,
            True,
            None,
            GObject.ParamFlags.READWRITE,
        )

    def run(self, procedure, run_mode, image, drawables, config, data):
        if run_mode in (Gimp.RunMode.INTERACTIVE, Gimp.RunMode.WITH_LAST_VALS):
            saved = load_choices(last_choices_path())
            if saved is not None:
                restore_choices(procedure, config, saved)  # GIMP keeps only the values of successful runs
        if run_mode == Gimp.RunMode.INTERACTIVE:
            if not self._dialog(procedure, config):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            save_choices(last_choices_path(), choices_from(config))
        layers = [drawable for drawable in drawables if isinstance(drawable, Gimp.Layer) and not drawable.is_group()]
        if not layers:
            return self._fail(procedure, "select one or more (non-group) layers to upscale")
        Gimp.progress_init("SRGAN upscaling")
        try:
            request = self._request(config)
            apply_results(image, upscale_layers(image, layers, request), request.scale)
        except BridgeError as error:
            return self._fail(procedure, str(error))
        Gimp.progress_end()
        Gimp.displays_flush()
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())

    @staticmethod
    def _dialog(procedure, config) -> bool:
        """Show the dialog; True when the user pressed OK."""
        GimpUi.init("srgan_upscale")
        dialog = GimpUi.ProcedureDialog.new(procedure, config, "SRGAN 4×")
        dialog.fill(["model", "model-file", "auto-tile", "tile", "device", "backend", "precision", "scale"])
        other = Gimp.ValueArray.new(1)
        other.append(GObject.Value(GObject.TYPE_STRING, OTHER_MODEL))
        dialog.set_sensitive_if_in("model-file", None, "model", other, True)
        dialog.set_sensitive("tile", True, config, "auto-tile", True)
        accepted = dialog.run()
        dialog.destroy()
        return accepted

    @staticmethod
    def _request(config) -> Request:
        """The dialog's values as srgan's; raises BridgeError naming the field to fix."""
        model = config.get_property("model")
        path = ""
        if model == OTHER_MODEL:
            chosen = config.get_property("model-file")
            if chosen is None or not chosen.get_path():
                raise BridgeError("Model is 'Another file…' but no file is chosen. Choose one in Model file")
            path = chosen.get_path()
        elif model != DEFAULT_MODEL:
            path = SrganUpscale.models.get(model, "")
            if not path:
                raise BridgeError(f"model '{model}' is no longer in srgan's model folders. Choose another Model")
        scale = config.get_property("scale")
        if 0 < scale < 1:
            raise BridgeError(f"scale {scale:g} is below 1. Set Scale to 1 to 16, or 0 for the model's factor")
        return Request(
            model=path,
            tile=0 if config.get_property("auto-tile") else config.get_property("tile"),
            device=DEVICES[config.get_property("device")],
            backend=config.get_property("backend"),
            precision=config.get_property("precision"),
            scale=scale,
        )

    @staticmethod
    def _fail(procedure, message: str):
        Gimp.progress_end()
        error = GLib.Error.new_literal(Gimp.PlugIn.error_quark(), message, 0)
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, error)


Gimp.main(SrganUpscale.__gtype__, sys.argv)
