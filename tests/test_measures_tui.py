"""The dashboard's Measures screen (``g``): the ranking of the selected grid, updated as
measures arrive in the store (the fixture stores of tests/test_tui.py)."""

from __future__ import annotations

from test_tui import build_seed_store, content_of, drive, make_app, refreshed, wait_for

from kerasgen.store import Store, load_results, utc_now


def _write_gap_measure(path, name="hessian_top", offset=0.0):
    """A measure equal to each run's gap (+ offset), as kerasgen measures would store it."""
    gaps = load_results(path).set_index("cell_id")["gap"]
    with Store(path) as store:
        store.save_measure_rows([{
            "cell_id": int(c), "measure": name, "settings_key": "k", "value": float(g) + offset,
            "estimator": "test", "settings_json": "{}", "details_json": "{}",
            "weights": "final", "weights_epoch": 4, "kept_epoch": 3, "seconds": 0.1,
            "computed_at": utc_now()} for c, g in gaps.items()])


@drive
async def test_the_measures_screen_ranks_measures_as_they_arrive(tmp_path):
    path = tmp_path / "seeds.db"
    build_seed_store(path)
    app = make_app(path, mode="measures")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.view.measures is not None)
        text = content_of(app.screen, "#measures-summary")
        assert "0 of 32 finished runs measured" in text and "kerasgen measures" in text
        assert "ratio" in content_of(app.screen, "#measures-table")
        _write_gap_measure(path)
        seen = app.refreshes
        await pilot.press("r")
        await refreshed(pilot, seen)
        await wait_for(pilot, lambda: app.view.measures is not None
                       and app.view.measures.stored == 32)
        table = content_of(app.screen, "#measures-table")
        first = next(line for line in table.splitlines() if line.strip().startswith("1 "))
        assert "λ_max(H)" in first and "+1.00" in first
        assert "32 of 32 finished runs measured" in content_of(app.screen, "#measures-summary")
        assert "best predictor of the gap is λ_max(H)" in content_of(app.screen,
                                                                     "#measures-summary")


@drive
async def test_g_opens_the_measures_screen_and_it_is_in_the_footer_and_help(tmp_path):
    from tui.screens.help import KEYS

    path = tmp_path / "seeds.db"
    build_seed_store(path)
    app = make_app(path, mode="heatmap")
    async with app.run_test(size=(120, 40)) as pilot:
        await refreshed(pilot)
        shown = {key for key, active in app.screen.active_bindings.items()
                 if active.binding.show}
        assert "g" in shown
        await pilot.press("g")
        await wait_for(pilot, lambda: app.current_mode == "measures"
                       and app.view.measures is not None)
    assert any(key == "g" for key, _ in KEYS)


def test_the_dashboard_data_computes_the_ranking_only_for_the_wanted_grid(tmp_path):
    from tui.data import DashboardData

    path = tmp_path / "seeds.db"
    build_seed_store(path)
    data = DashboardData(path)
    assert data.refresh().measures == {}
    data.wanted_measures = ("seeds", "resnet8", "digits")
    view = data.refresh().measures[("seeds", "resnet8", "digits")]
    assert view.stored == 0 and view.runs_finished == 32
    again = data.refresh().measures[("seeds", "resnet8", "digits")]
    assert again is view  # nothing changed: not recomputed
    _write_gap_measure(path)
    assert data.refresh().measures[("seeds", "resnet8", "digits")].stored == 32
    data.close()
