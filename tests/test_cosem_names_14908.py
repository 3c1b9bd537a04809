"""Classes 130-133 (IEC 62056-8-8 Annex B) named as the shared wire-format notes list them."""
import re

from dissectors import cosem_names


def _doc_table(shared):
    text = (shared / "docs" / "lon-wire-formats.md").read_text()
    rows = {}
    for m in re.finditer(r"^\s*\|\s*(13[0-3])\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|", text, re.M):
        cls, name, attrs, methods = int(m[1]), m[2], m[3], m[4]
        rows[cls] = (name, dict((int(n), a) for n, a in re.findall(r"(\d+)\s+([A-Za-z_0-9]+)", attrs)), methods)
    return rows


def test_classes_130_to_133_match_the_docs(shared):
    rows = _doc_table(shared)
    assert sorted(rows) == [130, 131, 132, 133]
    for cls, (name, attrs, methods) in rows.items():
        assert cosem_names.class_name(cls) == name
        assert cosem_names.attribute_name(cls, 1) == "logical_name"
        for n, a in attrs.items():
            assert cosem_names.attribute_name(cls, n) == a, (cls, n)
        if "reset" in methods:
            assert cosem_names.method_name(cls, 1) == "reset"
