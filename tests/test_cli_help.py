"""The command-line tools' one shape: shared flags defined once, --help lists them all."""

import pytest

from sgt_tfmot import _cli, convert, train
from sgt_tfmot.explain import __main__ as explain

TOOLS = {"sgt_tfmot.train": train, "sgt_tfmot.convert": convert, "sgt_tfmot.explain": explain}
SHARED = {name for names in _cli.SHARED_GROUPS.values() for name in names}


@pytest.mark.parametrize("program", sorted(TOOLS))
def test_help_and_helpfull_list_every_flag_the_tool_accepts_in_groups(program, capsys):
    tool = TOOLS[program]
    assert tool.main([program, "--help"]) == 0
    text = capsys.readouterr().out
    assert tool.main([program, "--helpfull"]) == 0
    assert capsys.readouterr().out == text
    names = {flag.name for flag in tool.FLAGS._flags().values()}
    for name in names:
        assert f"--{name}:" in text or f"--[no]{name}:" in text, name
    headings = [f"{title}:" for title in _cli.SHARED_GROUPS]
    positions = [text.index(f"\n{heading}\n") for heading in ["Flags:", *headings]]
    assert positions == sorted(positions)  # the tool's own flags, then the shared groups
    own = text[positions[0] : positions[1]]
    assert not any(f"--{name}:" in own or f"--[no]{name}:" in own for name in SHARED)


@pytest.mark.parametrize("program", sorted(TOOLS))
def test_the_shared_flags_are_defined_once_in_the_frame(program):
    by_module = TOOLS[program].FLAGS.flags_by_module_dict()
    for module, flags in by_module.items():
        if module != _cli.__name__:
            assert not {f.name for f in flags} & SHARED, module
    assert SHARED <= {f.name for f in by_module[_cli.__name__]}  # train too: --model files


def test_the_dataset_default_is_the_tools():
    assert train.FLAGS["dataset"].default == "mnist_subset"
    assert convert.FLAGS["dataset"].default is None and explain.FLAGS["dataset"].default is None


def test_convert_fills_its_options_dataclasses_from_the_flags_of_the_same_name():
    from sgt_tfmot.conversion import CheckOptions, Delivery, Thresholds

    convert.FLAGS(["convert", "--num_test", "37", "--min_agreement", "0.9", "--rgb_input",
                   "--image_size", "48,40", "--dataset", "folder:x"])  # fmt: skip
    try:
        checks = _cli.options_from_flags(CheckOptions, convert.FLAGS)
        thresholds = _cli.options_from_flags(Thresholds, convert.FLAGS, require=())
        delivery = _cli.options_from_flags(Delivery, convert.FLAGS, io_dtype="int8", softmax=True)
        inputs = _cli.model_inputs(convert.FLAGS)
    finally:
        convert.FLAGS.unparse_flags()
    assert checks == CheckOptions(num_test=37)
    assert thresholds == Thresholds(min_agreement=0.9)
    assert delivery == Delivery(rgb_input=True)
    assert inputs == {
        "dataset": "folder:x",
        "data_dir": None,
        "data_options": {"image_size": "48,40", "color_mode": None, "validation_split": None},
        "trust_model_code": False,
    }
    with pytest.raises(TypeError, match="io_dtype"):
        _cli.options_from_flags(Delivery, convert.FLAGS)
