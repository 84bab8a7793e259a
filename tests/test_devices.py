"""One device rule for prediction, chip classification and training (s2landcover.devices)."""

from __future__ import annotations

import pytest
import torch

from s2landcover.devices import choose_device, lightning_devices, trains_on_cuda
from s2landcover.errors import InputError


def test_auto_and_unset_take_cuda_only_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    for present, expected in ((False, "cpu"), (True, "cuda")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda present=present: present)
        assert choose_device(None).type == expected
        assert choose_device("auto").type == expected
        assert trains_on_cuda("auto") is present
        assert trains_on_cuda("gpu") is present
        assert trains_on_cuda("cpu") is False
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("cuda:1") == torch.device("cuda", 1)  # CUDA "present" (patched)


def test_absent_cuda_and_unknown_names_are_input_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="--device cuda:1: CUDA is not available"):
        choose_device("cuda:1")
    with pytest.raises(InputError, match="'gpu0' is not a device name"):
        choose_device("gpu0")


def test_lightning_devices_turns_a_count_into_an_int() -> None:
    assert lightning_devices("4") == 4
    assert lightning_devices(" 2 ") == 2
    assert lightning_devices("0,1") == "0,1"
    assert lightning_devices("auto") == "auto"
    assert lightning_devices(3) == 3


def test_predict_on_cuda_leaves_the_host_cpu_to_the_reader_threads(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """`s2lc predict` gives torch one CPU thread on CUDA (torch work on the host would otherwise
    fan out over every core beside the readers) and the rule's threads on a CPU (the network)."""
    from s2landcover import cli, predict

    settings: dict[str, int | None] = {}
    monkeypatch.setattr(cli, "process_settings", lambda threads, **_: settings.update(t=threads))
    monkeypatch.setattr(predict, "predict_scene", lambda *args, **kwargs: {})
    cases = [(True, "cuda", 1), (True, "cuda:1", 1), (True, "auto", 1), (True, "cpu", 6)]
    for cuda, device, expected in [*cases, (False, "auto", 6)]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        argv = ["predict", "--checkpoint", str(tmp_path / "model.pt"), "--scene", "s.tif"]
        args = cli.build_parser().parse_args(
            [*argv, "--out", "o.tif", "--threads", "6", "--device", device]
        )
        cli._HANDLERS["predict"](args, cli._config_of(args))
        assert settings["t"] == expected, (cuda, device)
