"""Every dashboard page through Streamlit's AppTest, on the embedded default model.

AppTest runs the real script in-process: widgets in, elements out.  The model is the
real Gemma 3 270M (converted once per machine); statistics use a small token budget.
Links are given as query parameters, as a shared link would.  (AppTest keeps the
sidebar's elements of a multipage app only on its first run, so later sidebar changes
are made through session state, as a widget would make them.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
pytestmark = pytest.mark.slow


def _app(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in {"langs": "en,fr,ja", "budget": "300", **query}.items():
        at.query_params[key] = value
    at.run()
    if page is not None:
        at.switch_page(f"routes/{page}.py").run()
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_overview_reselects_and_switches_detector_without_recounting(monkeypatch):
    at = _app()
    _ok(at)
    metrics = _metrics(at)
    assert metrics["Languages"] == "3"
    assert int(metrics["Language neurons"]) > 0
    assert len(_charts(at)) == 4
    assert at.query_params["langs"] == "en,fr,ja"
    assert not [d for d in at.get("metric") if d.proto.delta]  # no arrow that reads as a rise

    import langneurons.pipeline

    def no_recount(*_a, **_k):
        raise AssertionError("statistics recomputed")

    monkeypatch.setattr(langneurons.pipeline, "collect_language_stats", no_recount)
    at.session_state["sel_top_rate"] = 0.02
    at.run()
    _ok(at)
    assert int(_metrics(at)["Language neurons"]) > int(metrics["Language neurons"])
    assert at.query_params["top_rate"] == "0.02"
    at.session_state["method"] = "mean-diff"
    at.run()
    _ok(at)
    assert any("Mean difference" in m.value for m in at.markdown)
    assert at.query_params["method"] == "mean-diff"
    at.session_state["method"] = "three-way"
    at.run()
    _ok(at)
    assert any("Specific / related / general" in m.value for m in at.markdown)
    assert int(_metrics(at)["Language neurons"]) > 0


def test_a_link_restores_settings_and_ignores_invalid_values():
    at = _app(top_rate="7", filter_rate="0.9", lang="ja", metric="bogus")
    _ok(at)
    assert any("rate=7" in w.value for w in at.sidebar.warning)  # shown escaped: top\\_rate
    assert at.session_state["sel_top_rate"] == 0.01  # the default, not 7
    assert at.session_state["sel_filter_rate"] == 0.9
    at.switch_page("routes/heatmaps.py").run()
    _ok(at)
    assert at.selectbox(key="hm_lang").value == "ja"
    assert at.radio(key="hm_metric").value == "Activation probability"


@pytest.mark.parametrize(
    ("query", "key", "default"),
    [
        ({"top_rate": "nan"}, "sel_top_rate", 0.01),
        ({"top_rate": "inf"}, "sel_top_rate", 0.01),
        ({"strength": "nan"}, "pg_strength", 1.0),
        ({"strength": "-3"}, "pg_strength", 1.0),
        ({"strength": "99"}, "pg_strength", 1.0),
    ],
)
def test_a_link_with_a_number_that_is_not_finite_or_in_range_is_ignored(query, key, default):
    at = _app(None, **query)
    _ok(at)
    (name,) = query
    shown = [w.value.replace("\\", "") for w in at.sidebar.warning]  # Markdown escapes
    assert any(f"{name}={query[name]}" in text for text in shown), shown
    at.switch_page("routes/playground.py").run()
    _ok(at)
    assert at.session_state[key] == default


def test_an_old_view_link_opens_its_page():
    at = _app(view="Playground")
    _ok(at)
    assert at.radio(key="pg_mode").value == "Deactivate"


def test_heatmaps_table_and_pick_a_neuron():
    at = _app("heatmaps")
    _ok(at)
    assert len(_charts(at)) == 1
    assert len(at.dataframe) == 1
    at.radio(key="hm_metric").set_value("Score: entropy").run()
    _ok(at)
    at.slider(key="hm_range").set_value((100, 900)).run()
    _ok(at)
    assert at.query_params["zoom"] == "100-900"
    at.number_input(key="pick_layer").set_value(3).run()
    at.number_input(key="pick_neuron").set_value(42).run()
    at.button(key="pick_go").click().run()
    _ok(at)
    assert any("Neuron 3:42" in m.value for m in at.markdown)  # the inspector, on that neuron
    assert at.query_params["layer"] == "3" and at.query_params["neuron"] == "42"


def test_inspector_shows_profile_passages_and_promoted_tokens():
    at = _app("inspector")
    _ok(at)
    assert any("selected for" in m.value for m in at.markdown)  # default: a selected neuron
    assert len(_charts(at)) == 2
    assert any("background: rgba(232,89,12" in m.value for m in at.markdown)
    promoted = at.dataframe[0].value
    assert len(promoted) == 12 and "promotes" in promoted.columns


def test_neuron_map_pca_then_umap_on_demand():
    at = _app("neuron_map")
    _ok(at)
    assert len(_charts(at)) == 1
    assert at.radio(key="map_method").value == "PCA"
    at.radio(key="map_method").set_value("UMAP").run()
    _ok(at)
    assert len(_charts(at)) == 1
    assert not at.warning


def _generate(at: AppTest, tokens: int = 12) -> dict:
    at.number_input(key="pg_gen_max_new_tokens").set_value(tokens)
    at.button(key="pg_go").click().run()
    _ok(at)
    return at.session_state["pg_last"]


def test_playground_deactivating_french_changes_a_french_continuation():
    at = _app("playground")
    _ok(at)
    assert at.selectbox(key="pg_example").value == "fr"
    assert at.multiselect(key="pg_off").value == ["fr"]
    assert _expander(at, "Prompt and intervention").proto.expanded  # open before Generate
    last = _generate(at)
    assert last["baseline"] and last["modified"] and last["baseline"] != last["modified"]
    assert last["baseline_language"] == "fr"
    assert "deactivate fr" in last["intervention"]
    assert any("ln-output" in m.value for m in at.markdown)
    # Both continuations carry their trace: the prompt's tokens, then the generated ones,
    # and a heatmap of the French neurons beside each.
    base, modified = last["baseline_trace"], last["modified_trace"]
    assert base.tokens[: last["prompt_tokens"]] == modified.tokens[: last["prompt_tokens"]]
    assert len(base.tokens) > last["prompt_tokens"]
    assert len(_charts(at)) == 2  # a compact heatmap under each text
    assert [_title(c) for c in _charts(at)] == ["fr neurons", "fr neurons"]
    assert at.selectbox(key="pg_trace_lang").value == "fr"
    # The controls fold away once Generate is pressed: the outputs take the screen.
    assert not _expander(at, "Prompt and intervention").proto.expanded
    fr = base.languages.index("fr")
    prompt = last["prompt_tokens"]
    # French neurons are active on the French prompt; switched off, they stay dark after it.
    assert base.overall()[:prompt, fr].mean() > 0.6
    assert modified.overall(after=True)[prompt:, fr].max() == 0
    at.radio(key="pg_trace_view").set_value("Difference (modified − unmodified)").run()
    _ok(at)
    assert len(_charts(at)) == 2
    assert _title(_charts(at)[1]) == "fr neurons: modified − unmodified"
    at.toggle(key="pg_lines").set_value(True).run()  # each language's line under each
    _ok(at)
    assert len(_charts(at)) == 4
    assert at.session_state["pg_last"] is last  # a new view, no new generation


def _title(chart) -> str:
    return json.loads(chart.proto.spec)["layout"]["title"]["text"]


def _expander(at: AppTest, label: str):
    return next(e for e in at.expander if e.label == label)


def test_playground_heatmaps_follow_the_intervention_until_the_user_picks_another():
    at = _app("playground")
    assert at.selectbox(key="pg_trace_lang").value == "fr"  # French switched off
    at.radio(key="pg_mode").set_value("Steer").run()
    _ok(at)
    assert at.selectbox(key="pg_target").value == "ja"
    assert at.selectbox(key="pg_trace_lang").value == "ja"  # the language steered towards
    at.selectbox(key="pg_target").set_value("en").run()
    assert at.selectbox(key="pg_trace_lang").value == "en"  # any change of target
    # The user's own choice stays while the intervention does not change...
    at.selectbox(key="pg_trace_lang").set_value("fr").run()
    at.slider(key="pg_strength").set_value(1.5).run()
    assert at.selectbox(key="pg_trace_lang").value == "fr"
    # ... and the intervention's language returns when it does (here: another example).
    at.selectbox(key="pg_example").set_value("ja").run()
    assert at.selectbox(key="pg_target").value == "en"
    assert at.selectbox(key="pg_trace_lang").value == "en"
    last = _generate(at, 6)
    assert "steer en" in last["intervention"]
    assert [_title(c) for c in _charts(at)] == ["en neurons", "en neurons"]
    at.radio(key="pg_mode").set_value("Deactivate").run()
    assert at.multiselect(key="pg_off").value == ["fr"]  # its own choice, kept
    assert at.selectbox(key="pg_trace_lang").value == "fr"  # the first one switched off


def test_playground_an_example_brings_an_intervention_that_fits_it():
    at = _app("playground")
    at.selectbox(key="pg_example").set_value("ja").run()
    _ok(at)
    # Deactivate: the example's own language, not French still.
    assert at.multiselect(key="pg_off").value == ["ja"]
    assert at.selectbox(key="pg_trace_lang").value == "ja"
    at.radio(key="pg_mode").set_value("Steer").run()
    assert at.selectbox(key="pg_target").value == "fr"  # never Japanese towards Japanese
    at.selectbox(key="pg_example").set_value("en").run()
    at.selectbox(key="pg_target").set_value("ja").run()
    at.multiselect(key="pg_steer_off").set_value(["fr"]).run()
    at.selectbox(key="pg_example").set_value("ja").run()
    # Not steered towards its own language; the prompt's own language is switched off.
    assert at.selectbox(key="pg_target").value == "fr"
    assert at.multiselect(key="pg_steer_off").value == []
    assert at.selectbox(key="pg_trace_lang").value == "fr"
    last = _generate(at, 6)
    assert "steer fr" in last["intervention"] and "deactivate ja" in last["intervention"]


def test_playground_a_shared_link_with_its_own_prompt_shows_custom():
    at = _app("playground", prompt="Once upon a time, far away,")
    _ok(at)
    assert at.text_area(key="pg_prompt").value == "Once upon a time, far away,"
    assert at.selectbox(key="pg_example").value == "(custom)"
    at = _app("playground", prompt="今日の天気は")  # an example's own prompt names it
    assert at.selectbox(key="pg_example").value == "ja"


def test_playground_modes_keep_their_own_choices_and_reset_restores_everything():
    at = _app("playground")
    at.multiselect(key="pg_off").set_value(["fr", "ja"]).run()
    at.radio(key="pg_mode").set_value("Steer").run()
    _ok(at)
    # Steering starts from what its label promises: no French carried over.
    assert at.multiselect(key="pg_steer_off").value == []
    at.selectbox(key="pg_example").set_value("en").run()
    assert at.text_area(key="pg_prompt").value == "The weather today is"
    at.selectbox(key="pg_target").set_value("ja").run()
    last = _generate(at)
    assert "steer ja" in last["intervention"]
    assert "deactivate en" in last["intervention"]  # the prompt's own language, detected
    assert "fr" not in last["intervention"]
    assert last["modified_language"] == "ja"
    assert at.query_params["mode"] == "Steer" and at.query_params["target"] == "ja"
    at.radio(key="pg_mode").set_value("Deactivate").run()
    assert at.multiselect(key="pg_off").value == ["fr", "ja"]  # its own choice, kept

    at.button(key="pg_reset").click().run()
    _ok(at)
    assert at.radio(key="pg_mode").value == "Deactivate"
    assert at.selectbox(key="pg_example").value == "fr"
    assert at.text_area(key="pg_prompt").value.startswith("La Déclaration")
    assert at.multiselect(key="pg_off").value == ["fr"]
    assert "pg_last" not in at.session_state
    assert "mode" not in at.query_params


def test_playground_example_box_and_prompt_stay_in_step():
    at = _app("playground")
    at.selectbox(key="pg_example").set_value("ja").run()
    assert at.text_area(key="pg_prompt").value == "今日の天気は"
    at.text_area(key="pg_prompt").set_value("今日の天気は晴れ").run()
    assert at.selectbox(key="pg_example").value == "(custom)"
    at.selectbox(key="pg_example").set_value("ja").run()  # the same example again
    assert at.text_area(key="pg_prompt").value == "今日の天気は"
    at.text_area(key="pg_prompt").set_value("   ").run()
    at.button(key="pg_go").click().run()
    assert any("Write a prompt" in w.value for w in at.warning)


def test_playground_bad_neurons_and_sampling_settings_are_explained():
    at = _app("playground")
    at.text_input(key="pg_pairs").set_value("99:1")
    at.button(key="pg_go").click().run()
    assert any("Layer 99 does not exist" in e.value for e in at.error)
    assert not at.exception
    at.text_input(key="pg_pairs").set_value("")
    at.multiselect(key="pg_off").set_value([])
    at.button(key="pg_go").click().run()
    assert any("Nothing to change" in w.value for w in at.warning)


def test_other_languages_keep_the_last_results_marked_out_of_date():
    at = _app("playground")
    at.session_state["languages"] = ["en", "de", "ja"]
    at.run()
    _ok(at)
    assert any("Out of date" in w.value and "en, fr, ja" in w.value for w in at.warning)
    assert at.selectbox(key="pg_example").value == "fr"  # still the shown results' languages
    at.switch_page("routes/overview.py").run()
    assert len(_charts(at)) == 4 and _metrics(at)["Languages"] == "3"


def test_recomputing_with_other_languages_keeps_the_playground_in_step():
    at = _app("playground")
    assert at.selectbox(key="pg_example").value == "fr"
    at.sidebar.multiselect(key="languages").set_value(["en", "de", "ja"])
    at.sidebar.button(key="compute").click().run()
    _ok(at)
    assert not any("Out of date" in w.value for w in at.warning)
    assert at.selectbox(key="pg_example").value == "de"
    assert at.text_area(key="pg_prompt").value == "Das Wetter heute ist"
    assert at.multiselect(key="pg_off").value == ["de"]  # French is gone: the new default
    assert at.radio(key="pg_mode").value == "Deactivate"  # still the playground


def test_trace_page_colours_a_code_switched_text():
    at = _app("trace")
    _ok(at)
    assert len(_charts(at)) == 2  # each language's line, and the heatmap
    tokens = [m.value for m in at.markdown if "ln-token" in m.value]
    assert tokens and 'data-lang="fr"' in tokens[0] and 'data-lang="ja"' in tokens[0]
    at.text_area(key="tr_text").set_value("今日はとてもいい天気なので、公園を散歩しました。").run()
    _ok(at)
    tokens = next(m.value for m in at.markdown if "ln-token" in m.value)
    assert tokens.count('data-lang="ja"') > tokens.count('data-lang="fr"')
    at.selectbox(key="tr_trace_lang").set_value("ja").run()
    _ok(at)
    assert len(_charts(at)) == 2


def test_ablation_matrix_computes_and_caches():
    at = _app("ablation")
    _ok(at)
    at.multiselect(key="ab_langs").set_value(["fr", "ja"])
    at.number_input(key="ab_tokens").set_value(60)
    at.button(key="ab_go").click().run()
    _ok(at)
    assert len(_charts(at)) == 1
    assert any("diagonal" in c.value for c in at.caption)
    at.radio(key="ab_scale").set_value("Perplexity").run()
    _ok(at)
    assert len(_charts(at)) == 1


def test_steering_lab_sweeps_shows_curves_and_the_outputs_behind_a_point():
    at = _app("steering")
    _ok(at)
    assert any("run the sweep" in i.value for i in at.info)
    at.multiselect(key="sl_targets").set_value(["fr"])
    at.multiselect(key="sl_strengths").set_value([1.0])
    at.number_input(key="sl_count").set_value(3)
    at.number_input(key="sl_tokens").set_value(8)
    at.button(key="sl_go").click().run()
    _ok(at)
    assert len(_charts(at)) == 1
    table = at.dataframe[-1].value
    assert len(table) == 3 and set(table.columns) >= {"prompt", "continuation", "detected"}
    assert any("Recommended" in c.value for c in at.caption)
    at.selectbox(key="sl_pick_strength").set_value(1.0).run()
    _ok(at)
    steered = at.dataframe[-1].value
    assert list(steered["prompt"]) == list(table["prompt"])
    assert list(steered["continuation"]) != list(table["continuation"])
    # Other choices mark the curves out of date until the sweep runs again.
    at.number_input(key="sl_tokens").set_value(9).run()
    assert any("Out of date" in w.value for w in at.warning)


def test_a_prompt_of_ones_own_too_long_is_left_out_with_a_word():
    at = _app("steering")
    _ok(at)
    at.selectbox(key="sl_source").set_value("Your own").run()
    at.text_area(key="sl_own").input("x" * 2500 + "\nThe weather today is").run()
    _ok(at)
    assert any("1 prompt(s) longer than 2,000 characters" in w.value for w in at.warning)


def test_detector_comparison_selects_compares_and_measures():
    at = _app("detectors")
    _ok(at)
    assert any("press **Compare**" in i.value for i in at.info)
    at.button(key="dc_go").click().run()
    _ok(at)
    counts = at.dataframe[0].value
    # Every detector, average precision included (its samples collected with the model).
    assert list(counts.index) == ["lape", "mean-diff", "three-way", "average-precision"]
    assert list(counts.columns) == ["en", "fr", "ja", "distinct"]
    assert (counts["ja"] > 0).all()
    assert len(_charts(at)) == 2  # layers, overlap
    at.selectbox(key="dc_layers_of").set_value("ja").run()
    _ok(at)
    # Measuring the effects of two detectors on a few held-out tokens.
    at.multiselect(key="dc_methods").set_value(["lape", "mean-diff"])
    at.number_input(key="dc_tokens").set_value(16)
    at.button(key="dc_measure").click().run()
    _ok(at)
    tables = [d.value for d in at.dataframe]
    own = next(t for t in tables if "fr" in t.columns and t.index.name == "method")
    assert list(own.index) == ["lape", "mean-diff"]
    assert own.loc["lape", "fr"] > 0  # French neurons off hurt French
    assert any("Steering success" in m.value for m in at.markdown)
    at.multiselect(key="dc_methods").set_value(["lape", "three-way"]).run()
    assert any("Out of date" in w.value for w in at.warning)


def test_guided_tour_steps_through_and_generates():
    at = _app("tour")
    _ok(at)
    titles = []
    for _ in range(6):
        titles.append(at.subheader[0].value)
        if at.session_state["tour_step"] == 2:  # the trace of a code-switched text
            assert any('class="ln-token" data-lang="fr"' in m.value for m in at.markdown)
            assert len(_charts(at)) == 1
        if at.session_state["tour_step"] == 3:
            at.button(key="tour_run_3").click().run()
            _ok(at)
            boxes = [m.value for m in at.markdown if "ln-output" in m.value]
            assert len(boxes) == 3 and all("ln-lang" in b for b in boxes)
        if at.session_state["tour_step"] < 5:
            at.button(key="tour_next").click().run()
            _ok(at)
    assert len(set(titles)) == 6
    assert at.button(key="tour_next").disabled


def test_share_offers_the_link_and_three_formats():
    at = _app("share")
    _ok(at)
    labels = [b.label for b in at.get("download_button")]
    assert {"neurons.json", "neurons.csv", "activation_mask.pth (reference format)"} <= set(labels)
    link = at.code[0].value
    assert "langs=en%2Cfr%2Cja" in link


def test_errors_appear_in_the_page():
    at = _app(model="./no/such/model")
    assert any("does not exist" in e.value for e in at.error)
    at = _app(langs="en")
    assert any("at least two languages" in i.value for i in at.info)
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["corpus_kind"] = "Folder"
    at.session_state["corpus_dir"] = "/no/such/folder"
    at.run()
    assert any("neither 'udhr'" in e.value for e in at.sidebar.error)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run written by `compute` (as on another machine), with non-default thresholds."""
    from langneurons.pipeline import compute
    from langneurons.selection import LapeConfig

    out = tmp_path_factory.mktemp("runs") / "four"
    compute(
        None,
        ["en", "fr", "de", "ja"],
        max_tokens=300,
        out_dir=out,
        selection=LapeConfig(top_rate=0.02),
    )
    return out


def test_open_a_run_folder_instead_of_computing(run_folder, monkeypatch):
    import langneurons.pipeline

    def no_count(*_a, **_k):
        raise AssertionError("a run folder is browsed, not counted again")

    monkeypatch.setattr(langneurons.pipeline, "collect_language_stats", no_count)
    at = _app(run=str(run_folder))
    _ok(at)
    assert _metrics(at)["Languages"] == "4"  # the run's languages, not the link's
    assert at.session_state["sel_top_rate"] == 0.02  # the run's thresholds
    recorded = json.loads((run_folder / "neurons.json").read_text())["distinct_total"]
    assert int(_metrics(at)["Language neurons"]) == recorded  # the run's own selection again
    assert at.query_params["run"] == str(run_folder)
    at.switch_page("routes/heatmaps.py").run()
    _ok(at)
    assert len(_charts(at)) == 1


def test_an_opened_run_keeps_its_detector_and_is_read_again_when_it_changes(tmp_path):
    from langneurons.pipeline import compute
    from langneurons.selection import MeanDiffConfig

    out = tmp_path / "run"
    compute(
        None,
        ["en", "fr", "ja"],
        max_tokens=300,
        out_dir=out,
        selection=MeanDiffConfig(min_effect=0.8),
    )
    at = _app(run=str(out))
    _ok(at)
    assert at.session_state["method"] == "mean-diff"
    assert at.session_state["sel_min_effect"] == 0.8
    recorded = json.loads((out / "neurons.json").read_text())["distinct_total"]
    assert int(_metrics(at)["Language neurons"]) == recorded
    # The folder is rewritten with other languages: the next run of the page reads it again.
    compute(None, ["en", "de", "ja", "zh"], max_tokens=300, out_dir=out)
    at.run()
    _ok(at)
    assert _metrics(at)["Languages"] == "4"


def test_open_run_errors_are_clear(run_folder, tmp_path):
    at = _app(run=str(tmp_path / "missing"))
    assert any("is not a folder with results" in e.value for e in at.sidebar.error)
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["run"] = str(run_folder)
    at.session_state["run_model"] = str(tmp_path)
    at.run()
    assert at.error  # a model that cannot be loaded, or of another shape, is refused


@pytest.fixture
def classroom(tmp_path, monkeypatch, run_folder):
    """A classroom server: the embedded model only, runs and texts under their roots."""
    texts = tmp_path / "texts" / "demo"
    texts.mkdir(parents=True)
    from langneurons.corpus import load_corpus

    udhr = load_corpus("udhr", ["en", "fr"])
    for code in ("en", "fr"):
        (texts / f"{code}.txt").write_text("\n".join(udhr.texts[code].paragraphs), "utf-8")
    config = tmp_path / "classroom.toml"
    config.write_text(
        f'run_roots = ["{run_folder.parent}"]\ncorpus_roots = ["{texts.parent}"]\n'
        "max_prompt_chars = 120\nmax_new_tokens = 20\nmax_ablation_languages = 2\n"
        "max_ablation_tokens = 100\n"
    )
    monkeypatch.setenv("LANGNEURONS_CLASSROOM", str(config))
    return {"texts": texts, "runs": run_folder.parent}


def test_classroom_links_cannot_load_other_models_or_folders(classroom, tmp_path, run_folder):
    at = _app(model="./no/such/folder")
    _ok(at)
    assert any("runs only gemma\\-3\\-270m" in w.value for w in at.sidebar.warning)
    assert at.sidebar.selectbox(key="model").value == "gemma-3-270m"
    at = _app(run=str(tmp_path))  # a folder outside the run roots
    assert any("not one of this server" in w.value for w in at.sidebar.warning)
    assert at.sidebar.selectbox(key="run_dir").options == [str(run_folder.resolve())]
    assert not [t for t in at.sidebar.text_input if t.key == "run_dir"]  # never typed
    at = _app(model="Qwen/Qwen2.5-0.5B")
    assert at.sidebar.selectbox(key="model").value == "gemma-3-270m"
    assert _metrics(at)["Languages"] == "3"  # computed with the allowed model


def test_classroom_folders_are_chosen_under_their_roots_not_typed(classroom):
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["corpus_kind"] = "Folder"
    at.run()
    folders = at.sidebar.selectbox(key="corpus_pick").options
    assert folders == [str(classroom["texts"].resolve())]
    assert not [t for t in at.sidebar.text_input if t.key == "corpus_dir"]


def test_classroom_text_from_a_link_is_shown_escaped(classroom):
    at = _app(top_rate="[click](http://evil.example) ![x](http://evil.example/t.png)")
    shown = " ".join(w.value for w in at.sidebar.warning)
    assert "](" not in shown.replace("\\]\\(", "") and "\\!\\[" in shown


def test_classroom_caps_prompts_tokens_and_ablations(classroom):
    at = _app("playground", prompt="x" * 500)
    _ok(at)
    assert len(at.text_area(key="pg_prompt").value) == 120
    assert at.text_area(key="pg_prompt").proto.max_chars == 120
    tokens = at.number_input(key="pg_gen_max_new_tokens")
    assert tokens.max == 20 and tokens.value == 20
    at.switch_page("routes/ablation.py").run()
    _ok(at)
    assert len(at.multiselect(key="ab_langs").value) == 2
    assert at.number_input(key="ab_tokens").max == 100


def test_classroom_caps_hold_on_the_tour_and_the_detector_measurements(
    tmp_path, monkeypatch, run_folder
):
    """The caps on new tokens and steered prompts hold on every page that generates, not
    only the playground and the steering lab."""
    config = tmp_path / "classroom.toml"
    config.write_text(
        f'run_roots = ["{run_folder.parent}"]\nmax_new_tokens = 5\nmax_steering_prompts = 2\n'
    )
    monkeypatch.setenv("LANGNEURONS_CLASSROOM", str(config))
    import langneurons.dashboard.views.detectors as detectors
    import langneurons.dashboard.views.tour as tour
    from langneurons.errors import LangNeuronsError

    asked: dict[str, object] = {}

    def stream(lm, prompt, generation, intervention=None):
        asked["tour tokens"] = generation.max_new_tokens
        yield "x"

    def compare(*_args, **kwargs):
        asked["prompts"], asked["new tokens"] = len(kwargs["prompts"]), kwargs["max_new_tokens"]
        raise LangNeuronsError("stopped by the test")

    monkeypatch.setattr(tour, "stream", stream)
    monkeypatch.setattr(detectors, "compare_detectors", compare)
    at = _app("tour")
    _ok(at)
    at.session_state["tour_step"] = 3
    at.run()
    at.button(key="tour_run_3").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("routes/detectors.py").run()
    assert "strength 1 on 2 English openings" in at.button(key="dc_measure").help
    at.multiselect(key="dc_methods").set_value(["lape", "mean-diff"])
    at.button(key="dc_measure").click().run()
    assert any("stopped by the test" in e.value for e in at.error)
    assert asked == {"tour tokens": 5, "prompts": 2, "new tokens": 5}


PAYLOAD = "m[click](https:evil.example)<b>x</b>"
"""A folder name, model name or link value written to become a link and markup."""


def _raw_markup(at: AppTest) -> list[str]:
    """Texts of the page's Markdown elements in which the payload survived as markup."""
    kinds = ("markdown", "caption", "info", "warning", "error", "success", "title", "header")
    found = []
    for kind in kinds:
        for element in getattr(at, kind):
            for part in (getattr(element, "value", ""), getattr(element, "label", "")):
                text = str(part or "")
                if "[click](" in text or "<b>x</b>" in text:
                    found.append(f"{kind}: {text[:120]}")
    for element in at.sidebar.warning:
        if "[click](" in str(element.value):
            found.append(f"sidebar warning: {element.value[:120]}")
    return found


@pytest.mark.parametrize(
    "query",
    [
        {"model": PAYLOAD},
        {"run": PAYLOAD},
        {"prompt": PAYLOAD, "target": PAYLOAD, "lang": PAYLOAD, "neurons": PAYLOAD},
        {"langs": f"en,{PAYLOAD}", "method": PAYLOAD, "metric": PAYLOAD},
    ],
)
def test_text_from_a_link_is_never_markup_on_any_page(query):
    pages = [
        *("overview", "heatmaps", "inspector", "neuron_map", "playground", "trace"),
        *("steering", "detectors", "ablation", "tour", "share", "mask"),
    ]
    at = _app(None, **query)
    assert not at.exception, [e.value for e in at.exception]
    assert _raw_markup(at) == []
    for page in pages:
        at.switch_page(f"routes/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert _raw_markup(at) == [], page


def test_a_run_folder_and_corpus_named_as_markup_are_plain_text_on_every_page(run_folder, tmp_path):
    """Names read from the disk (a run folder, the corpus it records) reach every page as
    written: a folder named like a Markdown link and a tag stays text."""
    import shutil

    named = tmp_path / PAYLOAD
    shutil.copytree(run_folder, named)
    meta = json.loads((named / "meta.json").read_text())
    meta["corpus"]["name"] = PAYLOAD
    (named / "meta.json").write_text(json.dumps(meta))
    at = _app(None, run=str(named))
    _ok(at)
    assert _metrics(at)["Languages"] == "4"  # the run was opened, not refused
    assert any("corpus m\\[click\\]" in m.value for m in at.markdown)  # shown, escaped
    assert _raw_markup(at) == []
    for page in [
        *("overview", "heatmaps", "inspector", "neuron_map", "playground", "trace"),
        *("steering", "detectors", "ablation", "tour", "share", "mask"),
    ]:
        at.switch_page(f"routes/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert _raw_markup(at) == [], page


def test_a_damaged_run_folder_from_a_link_is_one_line_in_the_sidebar(run_folder, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(run_folder, damaged)
    meta = json.loads((damaged / "meta.json").read_text())
    meta["counting"] = []
    (damaged / "meta.json").write_text(json.dumps(meta))
    at = _app(None, run=str(damaged))
    assert not at.exception, [e.value for e in at.exception]
    shown = [e.value for e in at.sidebar.error]
    assert any("'counting' is not an object" in text for text in shown), shown


def test_recipes_found_in_the_steering_lab_steer_the_playground(monkeypatch):
    """The lab's Recipes: a search (here a stand-in that returns at once: the search
    itself is tested in test_recipes) is tabled with tuning and held-out figures side by
    side, drawn as a grid, kept in the cache, and one click puts it in the playground,
    which then says which recipe it steers with."""
    import langneurons.dashboard.views.recipes_lab as recipes_lab
    from langneurons.recipes import (
        ChosenRecipe,
        Recipe,
        RecipeBook,
        RecipeScores,
        neurons_digest,
    )

    def search(lm, run, targets, **_kwargs):
        tuning = RecipeScores(1.0, 1.0, 2.6, 0.8, 11, 3.5, 0.5)
        held = RecipeScores(0.91, 0.8, 2.7, 0.7, 11, 3.6, 0.5)
        chosen = ChosenRecipe("ja", Recipe("add", 2.0, "9-17"), tuning, held, tuning, held)
        grid = [{"target": "ja", **Recipe("add", 2.0, "9-17").to_json(), "success": 1.0,
                 "fluent": True, "chosen": True}]  # fmt: skip
        settings = {
            "neurons": neurons_digest(run.masks, run.languages),
            "tuning": {"source": "embedded openings (en), tuning half", "prompts": 11},
            "held_out": {"source": "embedded openings (en), held-out half", "prompts": 11},
            "grid": {"modes": ["set", "add"], "strengths": [1.0, 2.0], "bands": ["all", "9-17"]},
        }
        return RecipeBook({"ja": chosen}, settings, grid)

    monkeypatch.setattr(recipes_lab, "search_recipes", search)
    at = _app("steering")
    _ok(at)
    assert any("No recipe found yet" in i.value for i in at.info)
    at.multiselect(key="rc_targets").set_value(["ja"])
    at.button(key="rc_go").click().run()
    _ok(at)
    (table, *_) = [d.value for d in at.dataframe]
    assert table["recipe"].tolist() == ["add x2 in layers 9-17"]
    assert table["held-out success"].tolist() == ["91%"]
    assert any("never seen while choosing" in c.value for c in at.caption)
    assert len(_charts(at)) >= 1  # the grid of recipes tried
    at = _app("steering")  # a new session finds them in the cache
    _ok(at)
    assert at.dataframe[0].value["recipe"].tolist() == ["add x2 in layers 9-17"]
    at.button(key="rc_use").click().run()
    _ok(at)
    at.switch_page("routes/playground.py").run()  # AppTest's next run starts from here
    _ok(at)
    state = at.session_state
    assert (state["pg_mode"], state["pg_target"], state["pg_how"]) == ("Steer", "ja", "add")
    assert state["pg_strength"] == 2.0 and tuple(state["pg_layers"]) == (9, 17)
    shown = [c.value.replace("\\", "") for c in at.caption]  # Markdown escapes
    assert (
        "Stored recipe for ja: add x2 in layers 9-17; held-out success 0.91 on 11 prompts." in shown
    )
    at.slider(key="pg_strength").set_value(3.0).run()
    _ok(at)
    assert any("Your own settings" in c.value for c in at.caption)
    at.button(key="pg_use_recipe").click().run()
    assert at.session_state["pg_strength"] == 2.0
