import numpy as np
import pandas as pd
from typer.testing import CliRunner

from pertstore import Store
from pertstore.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_round_trip(store, tmp_path):
    root = store.uri
    store.close()
    values = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    np.savez(tmp_path / "e.npz", ids=np.array(["TP53", "BRCA1", "EGFR"]), values=values)
    out = run("import", tmp_path / "e.npz", "--source", "emb", "--store", root)
    assert "emb version" in out and "3 x 4" in out
    assert "emb" in run("ls", "--store", root)
    with Store.open(root) as s:
        version = s.ls().version.iloc[0]
    assert version in run("show", "emb", "--store", root)
    out = run("align", "emb", "-i", "EGFR", "-i", "zzz-not-a-gene", "--out", tmp_path / "a.parquet", "--store", root)
    assert "1/2" in out and "unresolved: zzz-not-a-gene" in out
    df = pd.read_parquet(tmp_path / "a.parquet")
    np.testing.assert_allclose(df.loc["EGFR", [f"emb:{j}" for j in range(4)]].to_numpy(dtype=np.float32), values[2])
    run("tag", "emb", version, "paper-v1", "--store", root)
    run("export", "emb", "--out", tmp_path / "all.h5ad", "--tag", "paper-v1", "--store", root)
    import anndata as ad

    assert ad.read_h5ad(tmp_path / "all.h5ad").obsm["emb"].shape == (3, 4)
    assert "1 set(s) verified, all clean" in run("verify", "--store", root)
    assert "1 sets" in run("catalog", "rebuild", "--store", root)
    assert "ENSG00000141510" in run("resolve", "p53", "--store", root)


def test_cli_reports_errors_without_a_traceback(store, tmp_path):
    root = store.uri
    store.close()
    (tmp_path / "bad.csv").write_text("gene,a\nTP53,x\n")
    result = runner.invoke(app, ["import", str(tmp_path / "bad.csv"), "--source", "s", "--store", root])
    assert result.exit_code != 0
    assert "non-numeric value 'x'" in str(result.exception)
