"""The frame every command-line tool shares: quiet start, flags, one-line errors, exit codes.

A tool (`sgt_tfmot.train`, `sgt_tfmot.convert`, `sgt_tfmot.explain`) declares its flags in
its own `FlagValues`, then calls `run_main(argv, program, flags, module name, work)`. The
frame parses the flags, prints the tool's help for `--help`, runs `work(positional args)`
and maps every outcome to an exit status:

| status | meaning |
|---|---|
| 0 | done (and every check passed) |
| 1 | a check failed (convert's gate); the files say why |
| 2 | bad input: one line "PROGRAM: error: ..." on stderr, nothing written |
| 130 | interrupted (Ctrl-C); run the same command again to resume where that applies |

Importing this module before TensorFlow keeps TensorFlow's C++ start-up lines (oneDNN, CUDA,
CPU features) off the terminal: TensorFlow is imported with stderr captured (and shown if
the import itself fails), and `TF_CPP_MIN_LOG_LEVEL=3` silences its later C++ logging.
`--verbose` on the command line, or a `TF_CPP_MIN_LOG_LEVEL` of the user's own (other
than 3, which is quiet anyway), keeps everything TensorFlow prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
METRICS_FILE = "metrics.json"


def _verbose_requested(argv: list[str]) -> bool:
    return any(arg in ("--verbose", "--verbose=true", "--verbose=1") for arg in argv)


_QUIET = {"on": False}


@contextlib.contextmanager
def native_output_captured():
    """Keeps C++ prints (the TFLite converter's, LiteRT's delegate notice) off the terminal
    while the CLIs run quietly; they are shown if the block fails."""
    if not _QUIET["on"]:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as captured:
        python_stderr.flush()
        os.dup2(captured.fileno(), 2)
        sys.stderr = open(os.dup(saved), "w", buffering=1)  # noqa: SIM115 (Python's own lines)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            python_stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)


_TOOLS = ("sgt_tfmot.train", "sgt_tfmot.convert", "sgt_tfmot.explain.__main__")
_STARTUP: dict = {}


def _start_heartbeat() -> None:
    """In a log, progress lines on stdout while a tool's process starts TensorFlow and the
    package (minutes on a loaded machine) and checks its input, until its work prints its
    own (`end_startup`). On stdout: the error line of a refusal stays alone on stderr."""
    from sgt_tfmot._checks import InputError
    from sgt_tfmot._progress import Progress

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(spec, "name", None) not in _TOOLS or sys.stdout.isatty():
        return
    try:
        progress = Progress(stream=lambda: sys.stdout, heartbeat=True).__enter__()
    except InputError:  # a bad $SGT_TFMOT_PROGRESS_SECONDS: the tool's own Progress says it
        return
    progress.update("sgt_tfmot: starting TensorFlow and the package", live=False)
    _STARTUP["progress"] = progress


def _startup_status(status: str) -> None:
    if "progress" in _STARTUP:
        _STARTUP["progress"].update(status, live=False)


def end_startup() -> None:
    """Ends the start-up heartbeat (the tool's work reports its own progress from now)."""
    progress = _STARTUP.pop("progress", None)
    if progress is not None:
        progress.__exit__(None, None, None)


def _import_tensorflow_quietly() -> None:
    _start_heartbeat()
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3":
        return  # too late, or the user's own log level
    if _verbose_requested(sys.argv[1:]):
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    _QUIET["on"] = True
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_import_tensorflow_quietly()

from absl import flags  # noqa: E402

from sgt_tfmot._checks import InputError, RunStopped, _interval, plain_message  # noqa: E402
from sgt_tfmot._progress import Progress  # noqa: E402

UsageError = InputError  # a command line that cannot run; kept for the tools' own checks


def run_main(
    argv: list[str],
    program: str,
    flag_values: flags.FlagValues,
    module_name: str,
    body: Callable[[list[str]], int],
) -> int:
    """The frame of a CLI's main(): parse, --help, run `body`, turn bad input into one line.

    Parses `argv` into the tool's own `flag_values` (not absl's global FLAGS, so the
    package's CLIs can be imported together), prints the module docstring and flag help for
    --help, and otherwise returns `body(positional arguments)`. A flag that does not parse,
    an `InputError` (shown with flag names), or another ValueError / OSError from `body` is
    printed as "PROGRAM: error: <one line>" on stderr with exit status 2, never a traceback;
    a `RunStopped` (a lost worker) likewise, with exit status 1.
    """
    _startup_status(f"{program}: reading and checking the input")
    flag_values.unparse_flags()
    try:
        positional = flag_values(list(argv))[1:]
    except flags.Error as error:
        return _bad_input(program, _flag_error(error, flag_values))
    if any(name in flag_values and flag_values[name].value for name in ("help", "helpfull")):
        _refresh_help(flag_values)
        print(help_text(sys.modules[module_name], flag_values))
        return EXIT_OK
    _quiet_python_logging()
    try:
        with _zoo_dir_from_flag(flag_values):
            return body(positional)
    except InputError as error:
        return _bad_input(program, error.for_flags())
    except (ValueError, OSError) as error:
        return _bad_input(program, _describe(error))
    except RunStopped as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print(f"\n{program}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        end_startup()


def live_help(flag_values: flags.FlagValues, name: str, text: Callable[[], str]) -> None:
    """The help of the string or list flag `name` is `text()`, computed again when --help
    shows it: a help that lists a registry's names lists the entries registered by then."""
    flag = flag_values[name]
    flag.live_help = text
    flag.help = text()


def _refresh_help(flag_values: flags.FlagValues) -> None:
    for name in list(flag_values):
        flag = flag_values[name]
        if getattr(flag, "live_help", None) is not None:
            flag.help = flag.live_help()


# The flags every tool shares, defined once (`define_shared_flags`), shown by --help in these
# groups after the tool's own flags.
SHARED_GROUPS = {
    "Data (the dataset or image folder, and how a folder is read)": (
        "dataset", "data_dir", "image_size", "color_mode", "validation_split",
    ),
    "Models": ("zoo_dir", "trust_model_code"),
    "Output and help": ("verbose", "help", "helpfull"),
}  # fmt: skip


def define_shared_flags(
    flag_values: flags.FlagValues,
    dataset: str | None = None,
    verbose: str = "Show TensorFlow's own log lines too.",
) -> None:
    """The flags of `SHARED_GROUPS`, in `flag_values`.

    Args:
      flag_values: The tool's own flags.
      dataset: --dataset's default; None (convert, explain) takes the dataset of the
        training run that wrote the model.
      verbose: --verbose's help (a tool may print more with it).
    """
    into = {"flag_values": flag_values}
    default = f"default {dataset}" if dataset else f"default: the training run's {METRICS_FILE}"
    flags.DEFINE_string("dataset", dataset, "", **into)
    live_help(flag_values, "dataset", lambda: f"Dataset: {_data_references()}; {default}.")
    flags.DEFINE_string("data_dir", None, "Folder with DATASET.npz (see sgt_tfmot.data).", **into)
    define_data_flags(flag_values)
    flags.DEFINE_string(
        "zoo_dir", None,
        "A local copy of the model zoo, looked in first for zoo:NAME models; default "
        "$SGT_TFMOT_ZOO (in a checkout, its zoo/), then the user cache, then a download.",
        **into,
    )  # fmt: skip
    flags.DEFINE_bool(
        "trust_model_code", False, "Load models whose layers carry Python code (Lambda).",
        **into,
    )  # fmt: skip
    flags.DEFINE_bool("verbose", False, verbose, **into)
    flags.DEFINE_bool("help", False, "Show this help.", short_name="h", **into)
    flags.DEFINE_bool("helpfull", False, "Show this help (every flag; the same as --help).", **into)


def _data_references() -> str:
    """What --dataset takes: a clause per registered data source (`sgt_tfmot.data`)."""
    from sgt_tfmot import data

    return data.references()


def help_text(module, flag_values: flags.FlagValues) -> str:
    """The module's docstring, then every flag the tool accepts: its own, then the shared
    groups (`SHARED_GROUPS`)."""
    shared = {name for names in SHARED_GROUPS.values() for name in names}
    own = sorted(
        (f for f in flag_values.flags_by_module_dict().get(module.__name__, [])
         if f.name not in shared),
        key=lambda f: f.name,
    )  # fmt: skip
    others = sorted(
        {f.name: f for f in flag_values._flags().values()  # noqa: SLF001 (absl's own walk)
         if f.name not in shared and f not in own}.values(),
        key=lambda f: f.name,
    )  # fmt: skip
    lines = [module.__doc__.strip(), "", "Flags:"]
    flag_values._render_flag_list(own + others, lines)  # noqa: SLF001 (absl's own format)
    for title, names in SHARED_GROUPS.items():
        group = [flag_values[name] for name in names if name in flag_values]
        if group:
            lines += ["", f"{title}:"]
            flag_values._render_flag_list(group, lines)  # noqa: SLF001
    return "\n".join(lines)


@contextlib.contextmanager
def _zoo_dir_from_flag(flag_values: flags.FlagValues):
    """Sets $SGT_TFMOT_ZOO from --zoo_dir while the tool runs (its processes see it too)."""
    from sgt_tfmot import zoo

    value = flag_values["zoo_dir"].value if "zoo_dir" in flag_values else None
    if value is None:
        yield
        return
    if not Path(value).expanduser().is_dir():
        raise InputError(f"--zoo_dir {value}: no such directory (a copy of the zoo/ folder).")
    saved = os.environ.get(zoo.ZOO_ENV)
    os.environ[zoo.ZOO_ENV] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(zoo.ZOO_ENV, None)
        else:
            os.environ[zoo.ZOO_ENV] = saved


def _quiet_python_logging() -> None:
    """TensorFlow's and absl's Python warnings off (the tools print what matters)."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].get_logger().setLevel("ERROR")


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        reason = error.strerror or type(error).__name__
        return f"{error.filename}: {reason}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return plain_message(error, limit=1000)


def _bad_input(program: str, message: str) -> int:
    print(f"{program}: error: {plain_message(message, limit=1000) or message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _accepted(flag) -> str:
    """What a flag accepts, from its absl parser."""
    parser = flag.parser
    kind = type(parser).__name__
    if hasattr(parser, "enum_values"):
        return "one of " + ", ".join(parser.enum_values)
    if kind in ("BooleanParser",):
        return f"--{flag.name} or --no{flag.name}"
    noun = {"IntegerParser": "an integer", "FloatParser": "a number"}.get(kind)
    if noun is None:
        return flag.help
    low, high = getattr(parser, "lower_bound", None), getattr(parser, "upper_bound", None)
    return f"{noun} {_interval(low, high)}".rstrip()


def _flag_error(error: flags.Error, flag_values: flags.FlagValues) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    match = re.match(r"flag --(\w+)=(.*?): (.*)", message)
    if match and match.group(1) in flag_values:
        name, value, reason = match.groups()
        if "range" in reason or "one of" in reason:
            return f"--{name}={value}: {reason}"
        return f"--{name}={value} is not valid ({reason}); accepted: {_accepted(flag_values[name])}"
    unknown = re.match(r"Unknown command line flag '(\w+)'", message)
    if unknown:
        return f"unknown flag --{unknown.group(1)} (--help lists the flags)"
    return message


class _ToolProgress(Progress):
    def __call__(self, message: str) -> None:
        end_startup()  # the work reports its own progress from its first stage on
        super().__call__(message)


def progress(program: str) -> Progress:
    """Progress lines "PROGRAM: message" on stderr; used as a context manager, a heartbeat
    repeats the current stage at least every 30 s when stderr is not a terminal
    (`sgt_tfmot._progress`). Its first line ends the start-up heartbeat."""
    return _ToolProgress(f"{program}: ", stream=lambda: sys.stderr)


def run_flags(model_file: Path) -> dict:
    """The flags of the training run that wrote `model_file` (its metrics.json), or {}.

    Raises:
      InputError: when the run's metrics.json exists but cannot be read.
    """
    metrics = model_file.parent / METRICS_FILE
    if not metrics.is_file():
        return {}
    try:
        settings = json.loads(metrics.read_text()).get("flags", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(
            f"Cannot read the training run's {metrics} ({exc}); pass --dataset (and "
            "--data_dir) explicitly."
        ) from None
    return settings if isinstance(settings, dict) else {}


DATA_OPTIONS = ("image_size", "color_mode", "validation_split")


def model_inputs(flag_values: flags.FlagValues) -> dict:
    """The keyword arguments of the shared flags that say which data and models a tool reads
    (`define_shared_flags`): `dataset`, `data_dir`, `data_options`, `trust_model_code`, as
    `convert_and_check` and `explain_models` take them."""
    return {
        "dataset": flag_values.dataset,
        "data_dir": flag_values.data_dir,
        "data_options": {name: flag_values[name].value for name in DATA_OPTIONS},
        "trust_model_code": flag_values.trust_model_code,
    }


def options_from_flags(cls, flag_values: flags.FlagValues, **given):
    """An options dataclass `cls` whose fields take the values of the flags of the same name;
    `given` sets the fields that have no flag of their name (or that a tool parses itself)."""
    names = {field.name for field in dataclasses.fields(cls)} - set(given)
    missing = sorted(name for name in names if name not in flag_values)
    if missing:
        raise TypeError(f"{cls.__name__} fields without a flag of their name: {missing}")
    return cls(**{name: flag_values[name].value for name in names}, **given)


def define_data_flags(flag_values: flags.FlagValues) -> None:
    """The flags that say how an image folder is read (train, convert and explain share them)."""
    flags.DEFINE_string("image_size", None, "H,W: resize folder images to this size.",
                        flag_values=flag_values)  # fmt: skip
    flags.DEFINE_enum("color_mode", None, ["grayscale", "rgb"],
                      "Channels of folder images (default: the images' own).",
                      flag_values=flag_values)  # fmt: skip
    flags.DEFINE_float("validation_split", None,
                       "Share of a folder without train/ and test/ held out as the test split.",
                       flag_values=flag_values)  # fmt: skip


def resolve_dataset(
    dataset: str | None, data_dir: str | None, model_files, data_options: dict | None = None
) -> tuple[str, str | None, str, dict]:
    """(dataset, data_dir, where the name came from, data options) for a tool's models.

    `--dataset` when given; else the dataset of the training runs that wrote the models
    (their metrics.json), never a guess from the input shape. The folder options
    (image size, colour mode, validation split) are the flags given, else the run's.

    Raises:
      InputError: without --dataset when no model comes from a training run, or the runs
        used different datasets; for a dataset that cannot be opened.
    """
    from sgt_tfmot import data

    given = {k: v for k, v in (data_options or {}).items() if v is not None}
    source = "--dataset" if dataset is not None else None
    run = {}
    for file in model_files:
        settings = run_flags(Path(file))
        if settings.get("dataset"):
            run.setdefault(str(settings["dataset"]), (settings, file))
    if dataset is None:
        if not run:
            raise InputError(
                f"No dataset given and no model comes from a training run with {METRICS_FILE}: "
                "pass --dataset NAME (and --data_dir DIR), the data the model was trained on."
            )
        if len(run) > 1:
            raise InputError(
                f"The models were trained on different datasets ({', '.join(sorted(run))}); "
                "pass --dataset NAME."
            )
        dataset = next(iter(run))
    settings, file = run.get(dataset, ({}, None))
    if source is None:
        source = str(Path(file).parent / METRICS_FILE)
    if data_dir is None and settings.get("data_dir"):
        data_dir = str(settings["data_dir"])
    options = {k: settings.get(k) for k in DATA_OPTIONS if settings.get(k) is not None}
    options.update(given)
    data.info(dataset, data_dir, **options)  # opens it: one clear error now
    return dataset, None if data_dir is None else str(data_dir), source, options
