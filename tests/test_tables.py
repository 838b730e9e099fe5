from densecl.tables import markdown_table


def test_padded_table_aligns_columns():
    assert markdown_table(["weights", "mAP"], [["random", "3.50"], ["densecl (resnet50)", 81]]) == (
        "| weights            | mAP  |\n"
        "| ------------------ | ---- |\n"
        "| random             | 3.50 |\n"
        "| densecl (resnet50) | 81   |"
    )


def test_compact_table_is_the_plain_markdown_form():
    assert markdown_table(["a", "bb"], [["1", "2"], ["333", "4"]], padded=False) == (
        "| a | bb |\n| --- | --- |\n| 1 | 2 |\n| 333 | 4 |"
    )


def test_a_header_alone_is_a_table_with_no_rows():
    assert markdown_table(["x"], []) == "| x |\n| - |"
