"""oneDNN-packed linear layers: the same outputs as nn.Linear, the same parameters and checkpoints, and
the plain path wherever a gradient is needed."""

import pytest
import torch
from torch import nn

from llm_memory import MemoryTransformerForCausalLM
from llm_memory.serving import packed_linear
from llm_memory.serving.models import load_models
from llm_memory.serving.packed_linear import PackedLinear, pack_linears
from llm_memory.serving.settings import ServeSettings


def test_onednn_is_there_on_this_platform():
    # The CPU wheels of torch for x86-64 Linux ship oneDNN; without it the demo would lose its speed-up.
    assert packed_linear.available()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 48), (16, 48), (3, 7, 48), (16, 1, 48)])
def test_packed_linear_computes_what_nn_linear_does(bias, shape):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80, bias=bias)
    packed = PackedLinear(linear)
    inputs = torch.randn(*shape)
    with torch.no_grad():
        expected = linear(inputs)
        result = packed(inputs)
    assert result.shape == expected.shape
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)


def test_packed_linear_shares_its_parameters_and_follows_in_place_changes():
    linear = nn.Linear(16, 24)
    packed = PackedLinear(linear)
    assert packed.weight is linear.weight and packed.bias is linear.bias
    inputs = torch.randn(4, 16)
    with torch.no_grad():
        packed(inputs)  # packs the weight as it is now
        linear.weight.mul_(-2.0)  # an optimizer step or load_state_dict writes in place like this
        torch.testing.assert_close(packed(inputs), linear(inputs), rtol=1e-5, atol=1e-5)


def test_a_replaced_weight_is_packed_again():
    linear = nn.Linear(16, 24)
    packed = PackedLinear(linear)
    inputs = torch.randn(4, 16)
    with torch.no_grad():
        packed(inputs)
        packed.weight = nn.Parameter(torch.randn(24, 16))  # as tying or resizing embeddings does
        torch.testing.assert_close(packed(inputs), nn.functional.linear(inputs, packed.weight, packed.bias))
        packed.weight.data = torch.randn(24, 16)  # new data under the same Parameter
        torch.testing.assert_close(packed(inputs), nn.functional.linear(inputs, packed.weight, packed.bias))


def test_with_gradients_on_the_plain_path_runs_and_backpropagates():
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    packed = PackedLinear(nn.Linear(16, 8))
    packed.load_state_dict(linear.state_dict())
    inputs = torch.randn(5, 16, requires_grad=True)
    packed(inputs).square().sum().backward()
    packed_grad = inputs.grad.clone()
    inputs.grad = None
    linear(inputs).square().sum().backward()
    torch.testing.assert_close(packed_grad, inputs.grad)
    torch.testing.assert_close(packed.weight.grad, linear.weight.grad)


def test_bf16_inputs_take_the_plain_path():
    linear = nn.Linear(16, 8).to(torch.bfloat16)
    packed = PackedLinear(linear)
    inputs = torch.randn(2, 16, dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(packed(inputs), linear(inputs))


def test_a_packed_model_gives_the_same_logits_keeps_its_state_dict_and_saves(tiny_lm, tmp_path):
    model = tiny_lm()
    plain = tiny_lm()
    keys_before = list(model.state_dict())
    assert pack_linears(model) == sum(type(m) is nn.Linear for m in plain.modules())
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert list(model.state_dict()) == keys_before
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tie survives
    input_ids = torch.randint(3, 97, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, plain(input_ids).logits, rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = MemoryTransformerForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, plain(input_ids).logits)


def test_the_switch_turns_packing_off(monkeypatch, tiny_checkpoints):
    monkeypatch.setenv("LLM_MEMORY_PACKED_LINEAR", "0")
    models = load_models(tiny_checkpoints["model"], settings=ServeSettings.from_env())
    assert not any(isinstance(m, PackedLinear) for m in models.lm.modules())
    assert any(type(m) is nn.Linear for m in models.lm.modules())


def test_a_kernel_that_fails_its_check_leaves_the_model_plain(tiny_lm, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no such kernel on this CPU")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", broken)
    assert not packed_linear.works()
    model = tiny_lm()
    assert pack_linears(model) == 0
    assert any(type(m) is nn.Linear for m in model.modules())


def test_packing_leaves_the_random_numbers_alone():
    model = nn.Sequential(nn.Linear(4, 4))
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    assert pack_linears(model) == 1
    assert torch.equal(torch.rand(4), expected)
