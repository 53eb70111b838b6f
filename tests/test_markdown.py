from lgm_gcp.markdown import markdown_table


def test_markdown_table_rows_rules_and_padding():
    text = markdown_table(["", "GAP", "GCP"], [["softmax", 1.5, "2.0"], ["lgm", "x"]])
    assert text.splitlines() == ["| | GAP | GCP |", "|---|---|---|", "| softmax | 1.5 | 2.0 |", "| lgm | x | |"]


def test_a_row_longer_than_its_header_is_refused():
    import pytest

    with pytest.raises(ValueError, match="a row of 3 cells under a header of 2"):
        markdown_table(["a", "b"], [[1, 2, 3]])
