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
    assert pack_linears(model, min_rows=1) == sum(type(m) is nn.Linear for m in plain.modules())
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
    pack_linears(model)  # timing the kernels draws random inputs, in a forked generator
    assert torch.equal(torch.rand(4), expected)


def test_calls_with_fewer_rows_than_min_rows_take_nn_linear_s_kernel():
    linear = nn.Linear(16, 8)
    packed = PackedLinear(linear, min_rows=4)
    with torch.no_grad():
        few, many = torch.randn(1, 3, 16), torch.randn(2, 2, 16)
        assert torch.equal(packed(few), linear(few)) and packed._packed is None
        torch.testing.assert_close(packed(many), linear(many))
        assert packed._packed is not None


@pytest.mark.parametrize(
    ("timings", "expected"),
    [
        ({1: (1.0, 0.5), 4: (2.0, 1.0), 16: (4.0, 2.0)}, 1),  # packed wins everywhere
        ({1: (1.0, 2.0), 4: (2.0, 1.0), 16: (4.0, 2.0)}, 4),  # from 4 rows
        ({1: (1.0, 2.0), 4: (2.0, 3.0), 16: (4.0, 2.0)}, 16),
        ({1: (1.0, 0.5), 4: (2.0, 3.0), 16: (4.0, 2.0)}, 16),  # a win below a loss does not count
        ({1: (1.0, 2.0), 4: (2.0, 3.0), 16: (4.0, 4.0)}, packed_linear.NEVER),  # a tie is no win
    ],
)
def test_packed_kernels_are_taken_from_the_fewest_rows_where_they_won(timings, expected):
    assert packed_linear.choose_min_rows(timings) == expected


def test_each_shape_is_timed_once_and_shapes_where_packing_lost_stay_plain():
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 8), nn.Linear(8, 16), nn.Linear(16, 8))
    timed = []

    def timer(layer):
        timed.append((layer.in_features, layer.out_features))
        wins = layer.in_features == 8
        return {1: (1.0, 2.0), 4: (1.0, 0.5 if wins else 2.0), 16: (1.0, 0.5 if wins else 2.0)}

    assert pack_linears(model, timer=timer) == 2
    assert timed == [(8, 16), (16, 8)]
    assert [type(m).__name__ for m in model] == ["PackedLinear", "Linear", "PackedLinear", "Linear"]
    assert model[0].min_rows == model[2].min_rows == 4


def test_kernel_seconds_times_both_kernels_at_each_row_count():
    timings = packed_linear.kernel_seconds(nn.Linear(16, 8), rows=(1, 4), calls=2, rounds=2)
    assert set(timings) == {1, 4}
    assert all(plain > 0 and packed > 0 for plain, packed in timings.values())
