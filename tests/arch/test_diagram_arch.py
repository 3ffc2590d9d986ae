"""Text and PNG renderings of architectures (paper Fig. 6 style)."""

from __future__ import annotations

from fasterseg.arch.diagram import draw_arch, format_arch
from fasterseg.arch.schema import Arch, Branch, Cell, load_arch, published_arch_path


def test_format_arch_lists_cells_channels_and_sharing():
    arch = load_arch(published_arch_path("fasterseg_student"))
    text = format_arch(arch)
    assert "3 shared cell(s)" in text
    assert text.count("shared") == 1 + 2 * 3
    assert "branch 0 -> 1/32 (10 cells)" in text and "branch 1 -> 1/16 (9 cells)" in text
    assert "32->128" in text  # the stride-2 zoomed conv of the 1/32 branch (facts section 13)
    assert "64->192" in text  # chi 12 cell of the 1/16 branch


def test_draw_arch_writes_png(tmp_path):
    arch = load_arch(published_arch_path("fasterseg_teacher"))
    out = draw_arch(arch, tmp_path / "sub" / "teacher.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    single = Arch("one", 19, 8, 8, (Branch(16, (Cell("conv", 8, 2, 4), Cell("skip", 16, 1, 8))),))
    svg = draw_arch(single, tmp_path / "one.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    assert "one: stem chi=8" in format_arch(single)
