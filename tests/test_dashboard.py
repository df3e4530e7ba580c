"""Every dashboard view through Streamlit's AppTest, on the embedded default model.

AppTest runs the real script in-process: widgets in, elements out.  The model is the
real Gemma 3 270M (converted once per machine); statistics use a small token budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
pytestmark = pytest.mark.slow


def _app(view: str = "Overview", langs: str = "en,fr,ja", **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["url_langs"] = langs
    at.session_state["url_budget"] = 300
    at.session_state["nav"] = view
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def test_overview_and_threshold_reselection_without_recomputing(monkeypatch):
    at = _app()
    _ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Languages"] == "3"
    assert int(metrics["Language neurons"]) > 0
    assert len(_charts(at)) == 4
    assert at.query_params["langs"] == ["en,fr,ja"] or at.query_params.get("langs") == "en,fr,ja"

    import langneurons.pipeline

    def no_recount(*_a, **_k):
        raise AssertionError("statistics recomputed")

    monkeypatch.setattr(langneurons.pipeline, "collect_language_stats", no_recount)
    at.slider(key="url_top_rate").set_value(0.02).run()
    _ok(at)
    assert int({m.label: m.value for m in at.metric}["Language neurons"]) > int(
        metrics["Language neurons"]
    )


def test_heatmaps_table_and_pick_a_neuron():
    at = _app("Heatmaps")
    _ok(at)
    assert len(_charts(at)) == 1
    assert len(at.dataframe) == 1
    at.radio(key="hm_metric").set_value("LAPE entropy").run()
    _ok(at)
    at.number_input(key="pick_layer").set_value(3).run()
    at.number_input(key="pick_neuron").set_value(42).run()
    at.button(key="pick_go").click().run()
    _ok(at)
    assert at.session_state["nav"] == "Neuron inspector"
    assert any("Neuron 3:42" in m.value for m in at.markdown)


def test_inspector_shows_profile_passages_and_promoted_tokens():
    at = _app("Neuron inspector")
    _ok(at)
    assert any("selected for" in m.value for m in at.markdown)  # default: a selected neuron
    assert len(_charts(at)) == 2
    assert any("background: rgba(232,89,12" in m.value for m in at.markdown)
    promoted = at.dataframe[0].value
    assert len(promoted) == 12 and "promotes" in promoted.columns


def test_neuron_map_pca():
    at = _app("Neuron map")
    _ok(at)
    assert len(_charts(at)) == 1
    assert at.radio(key="map_method").value == "PCA"


def test_playground_switch_off_changes_the_output():
    at = _app("Playground")
    _ok(at)
    assert at.multiselect(key="pg_off").value == ["fr"]
    at.number_input(key="pg_max").set_value(15)
    at.button(key="pg_go").click().run()
    _ok(at)
    last = at.session_state["pg_last"]
    assert last["baseline"][0] and last["modified"][0]
    assert last["baseline"][0] != last["modified"][0]
    assert last["baseline"][1] == "fr"
    assert any("ln-output" in m.value for m in at.markdown)
    at.button(key="pg_reset").click().run()
    _ok(at)
    assert "pg_last" not in at.session_state


def test_playground_steering_and_bad_neuron_input():
    at = _app("Playground")
    at.radio(key="pg_mode").set_value("Steer").run()
    at.selectbox(key="pg_target").set_value("ja")
    at.text_area(key="pg_prompt").set_value("The weather today is")
    at.multiselect(key="pg_off").set_value([])
    at.number_input(key="pg_max").set_value(12)
    at.button(key="pg_go").click().run()
    _ok(at)
    assert at.session_state["pg_last"]["modified"][1] == "ja"
    at.text_input(key="pg_pairs").set_value("99:1")
    at.button(key="pg_go").click().run()
    assert any("Layer 99 does not exist" in e.value for e in at.error)


def test_ablation_matrix_computes_and_caches():
    at = _app("Ablation matrix")
    _ok(at)
    at.multiselect(key="ab_langs").set_value(["fr", "ja"])
    at.number_input(key="ab_tokens").set_value(60)
    at.button(key="ab_go").click().run()
    _ok(at)
    assert len(_charts(at)) == 1
    at.radio(key="ab_scale").set_value("Perplexity").run()
    _ok(at)
    assert len(_charts(at)) == 1


def test_guided_tour_steps_through():
    at = _app("Guided tour")
    _ok(at)
    titles = []
    for _ in range(5):
        titles.append(at.subheader[0].value)
        if at.session_state["tour_step"] == 2:
            at.button(key="tour_run_2").click().run()
            _ok(at)
            assert sum("ln-output" in m.value for m in at.markdown) == 3
        if at.session_state["tour_step"] < 4:
            at.button(key="tour_next").click().run()
            _ok(at)
    assert len(set(titles)) == 5
    assert at.button(key="tour_next").disabled


def test_export_offers_the_three_formats():
    at = _app("Share & export")
    _ok(at)
    labels = [b.label for b in at.get("download_button")]
    assert {"neurons.json", "neurons.csv", "activation_mask.pth (reference format)"} <= set(labels)


def test_errors_appear_in_the_page():
    at = _app(url_model="./no/such/model")
    assert any("does not exist" in e.value for e in at.error)
    at = _app(langs="en")
    assert any("at least two languages" in i.value for i in at.info)
    at = _app(corpus_kind="Folder", corpus_dir="/no/such/folder")
    assert any("neither 'udhr'" in e.value for e in at.sidebar.error)


def test_neuron_map_umap_on_demand():
    at = _app("Neuron map")
    at.radio(key="map_method").set_value("UMAP").run()
    _ok(at)
    assert len(_charts(at)) == 1
    assert not at.warning


class _Upload:
    """What st.file_uploader returns: a name and the bytes."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def test_uploaded_corpus_files_become_a_corpus_folder():
    from dashboard.state import MAX_UPLOAD_BYTES, save_uploads
    from langneurons.corpus import load_corpus
    from langneurons.errors import CorpusError

    folder = save_uploads([_Upload("fr.txt", b"Un.\nDeux.\n"), _Upload("en.txt", b"One.\nTwo.\n")])
    assert load_corpus(folder, "en,fr").texts["fr"].paragraphs == ("Un.", "Deux.")
    assert (
        save_uploads([_Upload("en.txt", b"One.\nTwo.\n"), _Upload("fr.txt", b"Un.\nDeux.\n")])
        == folder
    )
    with pytest.raises(CorpusError, match="the limit is 5 MB"):
        save_uploads([_Upload("de.txt", b"x" * (MAX_UPLOAD_BYTES + 1))])
    with pytest.raises(CorpusError, match=r"name files <code>\.txt"):
        save_uploads([_Upload("german.doc", b"x")])


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run written by `compute` (as on another machine), with non-default thresholds."""
    from langneurons.pipeline import compute

    out = tmp_path_factory.mktemp("runs") / "four"
    compute(
        None,
        ["en", "fr", "de", "ja"],
        max_tokens=300,
        settings={"top_rate": 0.02, "filter_rate": 0.95, "activation_bar_ratio": 0.95},
        out_dir=out,
    )
    return out


def test_open_a_run_folder_instead_of_computing(run_folder, monkeypatch):
    import langneurons.pipeline

    def no_count(*_a, **_k):
        raise AssertionError("a run folder is browsed, not counted again")

    monkeypatch.setattr(langneurons.pipeline, "collect_language_stats", no_count)
    at = _app(stats_source="Open a run", url_run=str(run_folder))
    _ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Languages"] == "4"  # the run's languages, not the sidebar's
    assert at.slider(key="url_top_rate").value == 0.02  # the run's thresholds
    recorded = json.loads((run_folder / "neurons.json").read_text())["distinct_total"]
    assert int(metrics["Language neurons"]) == recorded  # the run's own selection again
    assert at.query_params["run"] in ([str(run_folder)], str(run_folder))
    at.session_state["nav"] = "Heatmaps"
    at.run()
    _ok(at)
    assert len(_charts(at)) == 1


def test_open_run_errors_are_clear(run_folder, tmp_path):
    at = _app(stats_source="Open a run", url_run=str(tmp_path / "missing"))
    assert any("is not a folder with results" in e.value for e in at.error)
    at = _app(stats_source="Open a run", url_run=str(run_folder), run_model=str(tmp_path))
    assert at.error  # a model that cannot be loaded, or of another shape, is refused
