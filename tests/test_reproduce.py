"""``interpretgan.reproduce``: the stored notebook keeps what a reader sees of a headless run's text output."""
import nbformat

from interpretgan.reproduce import squash_streams


def _stream(name, text):
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_squash_streams_keeps_the_last_frame_of_each_bar_and_joins_consecutive_messages():
    cell = nbformat.v4.new_code_cell("fit()")
    cell.outputs = [
        _stream("stdout", "fitting conv1\n"),
        _stream("stderr", "\rconv1:   0%|   | 0/100"),
        _stream("stderr", "\rconv1:  50%|#  | 50/100"),
        _stream("stderr", "\rconv1: 100%|###| 100/100\n"),
        _stream("stderr", "\rconv2:  10%|   | 10/100\r"),  # a bar left unfinished, ending on a carriage return
        _stream("stdout", "done\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=1),
        _stream("stdout", "a\n"),
        _stream("stdout", "b\n"),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_markdown_cell("text")])
    assert squash_streams(nb) == 4  # 4 stderr messages into 1, then stdout "a" and "b" into 1
    assert [(o.output_type, o.get("name"), o.get("text")) for o in cell.outputs] == [
        ("stream", "stdout", "fitting conv1\n"),
        ("stream", "stderr", "conv1: 100%|###| 100/100\nconv2:  10%|   | 10/100"),
        ("stream", "stdout", "done\n"),
        ("execute_result", None, None),
        ("stream", "stdout", "a\nb\n"),
    ]
    nbformat.validate(nb)
    assert squash_streams(nb) == 0  # a second pass changes nothing
    assert cell.outputs[1].text == "conv1: 100%|###| 100/100\nconv2:  10%|   | 10/100"
