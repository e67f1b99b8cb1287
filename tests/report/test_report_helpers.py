from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from irtscope.report import render_template_string, save_figure, write_table


def test_untrusted_text_is_escaped() -> None:
    html = render_template_string("<p>{{ t }}</p>", {"t": "<script>alert(1)</script>"})
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_write_table_all_formats(tmp_path: Path) -> None:
    files = write_table(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), tmp_path, "t1")
    assert pd.read_csv(files.csv)["a"].tolist() == [1, 2]
    assert pd.read_excel(files.xlsx)["b"].tolist() == ["x", "y"]
    assert "| a |" in files.markdown.read_text().replace("|   a |", "| a |")


def test_save_figure(tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    files = save_figure(fig, tmp_path, "line")
    plt.close(fig)
    assert files.png.stat().st_size > 0 and files.svg.read_text().startswith("<?xml")
    assert files.data_uri.startswith("data:image/png;base64,")
