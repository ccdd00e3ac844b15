import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2

from tb_activations import metadata
from tb_activations.summary import (
    SummaryWriter,
    float_tensor_value,
    image_value,
    scalar_value,
    serialize_event,
    text_value,
)
from tests.conftest import read_run, scalar_values


def _values():
    content = {"version": metadata.PROTO_VERSION, "layer": "conv"}
    return [
        image_value(
            "conv/mosaic", [b"\x89PNG-a", b"\x89PNG-b" * 300], width=7, height=3, description="d"
        ),
        scalar_value("conv/dead_fraction", 0.25),
        float_tensor_value(
            "conv/channel_stats", np.arange(24, dtype=np.float32).reshape(2, 3, 4), content=content
        ),
        text_value("_tb_activations/predictions", "| a | b |"),
    ]


def test_serialized_event_parses_to_the_same_event():
    values = _values()
    expected = event_pb2.Event(wall_time=12.5, step=300, summary=summary_pb2.Summary(value=values))
    parsed = event_pb2.Event.FromString(serialize_event(300, values, wall_time=12.5))
    assert parsed == expected
    assert event_pb2.Event.FromString(serialize_event(0, [], wall_time=1.0)).step == 0


def test_writer_opens_lazily_and_tensorboard_reads_it_back(tmp_path):
    run = tmp_path / "run"
    writer = SummaryWriter(str(run))
    assert not run.exists()
    for step in (0, 1, 2**40):
        writer.write(step, _values())
    writer.close()
    acc = read_run(run)
    assert [e.step for e in acc.Tensors("conv/mosaic")] == [0, 1, 2**40]
    assert scalar_values(acc, "conv/dead_fraction") == [0.25] * 3
    assert acc.summary_metadata["conv/channel_stats"].data_class == summary_pb2.DATA_CLASS_TENSOR
