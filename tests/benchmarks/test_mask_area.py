def test_table_has_a_row_per_run_and_folder(benchmark_module):
    ma = benchmark_module("mask_area")
    figures = {"images": 66, "dice_mean": 0.93386, "dice_median": 0.9507, "area_ratio": 1.0526}
    other = {"images": 80, "dice_mean": 0.8087, "dice_median": 0.8039, "area_ratio": 1.4079}
    md = ma.table({"run-a": {"hannover": figures, "pediatric": other}, "run-b": {}})
    rows = md.strip().splitlines()[2:]
    assert rows == [
        "| run-a | hannover | 66 | 0.9339 | 0.9507 | 1.053 |",
        "| run-a | pediatric | 80 | 0.8087 | 0.8039 | 1.408 |",
    ]
