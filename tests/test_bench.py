"""The benchmark command measures a real training run and a bare loop, side by side for variants."""

from fundus2ffa.bench import main


def test_bench_reports_time_flops_mfu_and_memory_for_each_variant(capsys):
    table = main([
        "debug=smoke", "generator.num_downs=8", "--iterations", "2", "--warmup", "1",
        "--variant", "model=pix2pix", "--variant", "model=pix2pix loss.l1.weight=10",
    ])
    assert len(table) == 2
    for row in table:
        assert row["seconds_per_iteration"] > 0 and row["bare_seconds_per_iteration"] > 0
        assert row["gflops_per_iteration"] > 0 and row["matmul_peak_gflops_per_second"] > 0
        assert 0 < row["mfu"] < 5 and row["peak_memory_mb"] > 0
        assert row["iterations_timed"] == 2
    out = capsys.readouterr().out
    assert "mfu" in out and "model=pix2pix loss.l1.weight=10" in out
