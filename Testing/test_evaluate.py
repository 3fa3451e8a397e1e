"""``lungautoseg-train evaluate``: which cases it scores."""
import pytest

from LungAutoSegLib.errors import InputError
from lungautoseg_train.data import read_dataset


def test_evaluate_selects_all_a_fold_or_a_named_split(tmp_path):
    from lungautoseg_train.evaluate import select

    (tmp_path / "dataset.csv").write_text("case,patient,image,label,fold,split\n"
                                          "a,a,i/a,l/a,0,train\nb,b,i/b,l/b,1,test\nc,c,i/c,l/c,1,\n")
    records = read_dataset(tmp_path / "dataset.csv")
    assert [r.case for r in select(records, "all")] == ["a", "b", "c"]
    assert [r.case for r in select(records, "1")] == ["b", "c"]
    assert [r.case for r in select(records, "test")] == ["b"]
    with pytest.raises(InputError, match="no cases in split 'validation'"):
        select(records, "validation")
