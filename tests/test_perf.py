import torch

from cnnlab.perf import cpu_model, hardware_summary


def test_hardware_summary_names_cpu_threads_and_torch():
    text = hardware_summary()
    assert cpu_model() in text
    assert f"{torch.get_num_threads()} torch threads" in text
    assert torch.__version__.split("+")[0] in text
    assert ("GPU " in text) == torch.cuda.is_available()
