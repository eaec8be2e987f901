"""Text sources: CoNLL-2003 and ATIS from their installed packages, CoNLL files and JSON records with lists."""

import json

import pytest

from mtl.data import DATASETS, read_table
from mtl.errors import MtlError


@pytest.fixture(scope="module")
def conll2003():
    return read_table(dataset="conll2003")[0]


@pytest.fixture(scope="module")
def atis():
    return read_table(dataset="atis")[0]


def test_conll2003_sentences_splits_and_first_row(conll2003):
    assert {"conll2003", "atis", "adult", "womens_clothing", "california_housing"} <= set(DATASETS)
    assert list(conll2003.columns) == ["text", "ner_tags", "pos_tags", "chunk_tags", "split"]
    assert conll2003["split"].value_counts().to_dict() == {"train": 14041, "val": 3250, "test": 3453}
    assert list(conll2003["split"].drop_duplicates()) == ["train", "val", "test"]
    first = conll2003.iloc[0]
    assert first["text"] == "EU rejects German call to boycott British lamb ."
    assert first["ner_tags"] == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]
    assert first["pos_tags"][:3] == ["NNP", "VBZ", "JJ"] and first["chunk_tags"][:3] == ["B-NP", "B-VP", "B-NP"]
    assert not conll2003["text"].str.contains("-DOCSTART-").any()
    for text, *tags in zip(conll2003["text"], conll2003["ner_tags"], conll2003["pos_tags"], conll2003["chunk_tags"],
                           strict=True):
        assert all(len(t) == len(text.split(" ")) for t in tags)


def test_atis_utterances_splits_and_first_rows(atis):
    assert list(atis.columns) == ["text", "slots", "intent", "split"]
    assert atis["split"].value_counts().to_dict() == {"train": 4478, "val": 500, "test": 893}
    assert list(atis["split"].drop_duplicates()) == ["train", "val", "test"]
    first = atis.iloc[0]
    assert first["text"] == "i want to fly from baltimore to dallas round trip"
    assert first["slots"][-3:] == ["B-toloc.city_name", "B-round_trip", "I-round_trip"]
    assert first["intent"] == "atis_flight"
    # the first dev utterance of the standard split (Goo et al. 2018 / JointBERT)
    assert atis[atis["split"] == "val"].iloc[0]["text"].startswith("i want to fly from boston at 838 am")
    assert atis[atis["split"] == "test"].iloc[0]["text"].startswith("i would like to find a flight from charlotte")
    assert atis["intent"].str.startswith("atis_").all()
    assert all(len(slots) == len(text.split(" ")) for text, slots in zip(atis["text"], atis["slots"], strict=True))


def test_conll_file_skips_docstart_and_blank_lines(tmp_path):
    path = tmp_path / "ner.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nJohn NNP B-NP B-PER\nlives VBZ B-VP O\n\n\n"
                    "-DOCSTART- -X- -X- O\n\nNew NNP B-NP B-LOC\nYork NNP I-NP I-LOC\n")
    frame, source = read_table(path=str(path))
    assert source == str(path) and list(frame.index) == [0, 1]
    assert list(frame.columns) == ["text", "ner_tags", "pos_tags", "chunk_tags"]
    assert frame["text"].tolist() == ["John lives", "New York"]
    assert frame["ner_tags"].tolist() == [["B-PER", "O"], ["B-LOC", "I-LOC"]]
    assert frame["chunk_tags"].tolist() == [["B-NP", "B-VP"], ["B-NP", "I-NP"]]


def test_conll_file_with_other_columns_keeps_word_and_last_tag(tmp_path):
    path = tmp_path / "ner.conll"
    path.write_text("John x B-PER\nSmith x I-PER\n\nhi O\n")
    frame = read_table(path=str(path))[0]
    assert list(frame.columns) == ["text", "ner_tags"]
    assert frame.to_dict("records") == [{"text": "John Smith", "ner_tags": ["B-PER", "I-PER"]},
                                        {"text": "hi", "ner_tags": ["O"]}]


@pytest.mark.parametrize("content", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_conll_file_without_sentences_is_an_error(tmp_path, content):
    path = tmp_path / "empty.conll"
    path.write_text(content)
    with pytest.raises(MtlError, match="holds no sentences") as error:
        read_table(path=str(path))
    assert error.value.where == "data.path"


def test_conll_line_without_tag_is_an_error(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("John B-PER\n\nlonely\n")
    with pytest.raises(MtlError, match=r"bad.conll, line 3: expected 'word \.\.\. tag' columns, got 'lonely'") as error:
        read_table(path=str(path))
    assert error.value.where == "data.path"


@pytest.mark.parametrize("ext", ["json", "jsonl"])
def test_json_records_keep_lists_and_strings(tmp_path, ext):
    records = [
        {"sentence": "John lives in New York.", "label": "2020-01-01", "code": "007", "score": 1.5,
         "ner_tags": ["B-PER", "O", "O", "B-LOC", "I-LOC"]},
        {"sentence": "Hi", "label": "12", "code": "010", "score": 2, "ner_tags": ["O"]},
    ]
    path = tmp_path / f"records.{ext}"
    path.write_text(json.dumps(records) if ext == "json" else "\n".join(json.dumps(r) for r in records) + "\n")
    frame = read_table(path=str(path))[0]
    assert frame["ner_tags"].dtype == object
    assert frame["ner_tags"].tolist() == [["B-PER", "O", "O", "B-LOC", "I-LOC"], ["O"]]
    assert frame["label"].tolist() == ["2020-01-01", "12"] and frame["code"].tolist() == ["007", "010"]
    assert frame["score"].tolist() == [1.5, 2.0]
