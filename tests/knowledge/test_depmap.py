"""depmap on a SYNTHETIC effect matrix written here (no DepMap data ships with the repo): header
resolution (Entrez, then symbol), missing values, standardisation, failures and bad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pertstore.producers.knowledge.depmap import gene_vectors, parse_header, read_effects

from pertstore.errors import InvalidInputError


def _matrix() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    cells = [f"ACH-{i:06d}" for i in range(10)]
    table = pd.DataFrame(
        rng.normal(-0.5, 0.4, (10, 6)),
        columns=["TP53 (7157)", "MDM2 (4193)", "KRAS (999999999)", "NOTAGENE (123456789)", "TP53", "BRCA1 (672)"],
    )
    table.iloc[3, 1] = np.nan  # MDM2: one cell line missing -> filled with its mean
    table.iloc[:6, 5] = np.nan  # BRCA1: 60% missing -> failure
    table.insert(0, "ModelID", cells)
    return table


def test_parse_header():
    assert parse_header("TP53 (7157)") == ("TP53", "7157")
    assert parse_header("C1orf112") == ("C1orf112", None)


def test_depmap_columns_become_gene_rows(store, tmp_path):
    table = _matrix()
    path = tmp_path / "effects.csv"
    table.to_csv(path, index=False)
    card = store.produce("depmap", source="depmap", inputs={"effects": str(path)}, max_failed_fraction=1.0)
    assert card.dim == 10 and card.n_rows == 3
    reasons = " | ".join(card.failed.values())
    assert "'NOTAGENE (123456789)': not in the gene registry" in reasons
    assert "'TP53': " in reasons and "already taken" in reasons
    assert "60% of cell lines missing" in reasons
    x = store.get("depmap", ["TP53", "MDM2", "KRAS", "BRCA1"]).values
    np.testing.assert_allclose(x[0], table["TP53 (7157)"], rtol=1e-6)
    np.testing.assert_allclose(x[2], table["KRAS (999999999)"], rtol=1e-6)  # resolved by its symbol
    mdm2 = table["MDM2 (4193)"].to_numpy()
    np.testing.assert_allclose(x[1], np.where(np.isnan(mdm2), np.nanmean(mdm2), mdm2), rtol=1e-6)
    assert np.isnan(x[3]).all()


def test_parquet_reads_like_csv_and_standardisation(tmp_path):
    table = _matrix()
    table.to_csv(tmp_path / "effects.csv", index=False)
    table.to_parquet(tmp_path / "effects.parquet", index=False)
    csv = read_effects(tmp_path / "effects.csv")
    pd.testing.assert_frame_equal(csv, read_effects(tmp_path / "effects.parquet"), check_exact=False)
    assert list(csv.index) == list(table.ModelID)
    z = gene_vectors(csv.to_numpy().T, standardize=True)
    assert np.isfinite(z[:5]).all()
    np.testing.assert_allclose(z[:5].mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(z[:5].std(1), 1, atol=1e-12)
    np.testing.assert_array_equal(gene_vectors(csv.to_numpy().T[:1], standardize=False), csv.to_numpy().T[:1])


def test_bad_effect_matrix_names_the_column_and_cell_line(tmp_path):
    table = _matrix()
    table["MDM2 (4193)"] = table["MDM2 (4193)"].astype(object)
    table.loc[2, "MDM2 (4193)"] = "n/a?"
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InvalidInputError, match=r"bad.csv: column 'MDM2 \(4193\)'.*ACH-000002"):
        read_effects(tmp_path / "bad.csv")
