"""Comparison of two TFDV statistics protos that may differ only by merge order.

Two runs over the same examples give the same counts, extremes and top
values, while float sums and the quantile-based histograms depend on how
the rows were batched and merged.
"""

from __future__ import annotations

import math


def read_stats(path):
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = statistics_pb2.DatasetFeatureStatisticsList()
    with open(path, "rb") as f:
        stats.ParseFromString(f.read())
    return stats


def _assert_histograms_match(where, local, multi, minimum, maximum):
    """Compares the shape of two TFDV histograms.

    TFDV derives both histogram kinds from an approximate quantiles sketch,
    whose result depends on how the rows were split into bundles, so bucket
    boundaries are compared by range only.
    """
    assert len(local) == len(multi), where
    for a, b in zip(local, multi):
        assert a.type == b.type, where
        assert len(a.buckets) == len(b.buckets), where
        assert math.isclose(
            sum(x.sample_count for x in a.buckets),
            sum(x.sample_count for x in b.buckets),
            rel_tol=1e-9,
        ), where
        for bucket in b.buckets:
            assert minimum <= bucket.low_value <= bucket.high_value <= maximum, (where, bucket)


def _assert_common_stats_match(where, local, multi):
    from tensorflow_metadata.proto.v0 import statistics_pb2

    a = statistics_pb2.CommonStatistics()
    a.CopyFrom(local)
    b = statistics_pb2.CommonStatistics()
    b.CopyFrom(multi)
    a.ClearField("num_values_histogram")
    b.ClearField("num_values_histogram")
    # Counts of present, missing and total values are exact in both runs.
    assert a == b, where
    _assert_histograms_match(
        where + " num_values", [local.num_values_histogram], [multi.num_values_histogram],
        local.min_num_values, local.max_num_values,
    )


def assert_feature_stats_match(where, local, multi):
    assert local.type == multi.type, where
    kind = local.WhichOneof("stats")
    assert kind == multi.WhichOneof("stats"), where
    if kind == "num_stats":
        a, b = local.num_stats, multi.num_stats
        _assert_common_stats_match(where, a.common_stats, b.common_stats)
        for field in ("min", "max", "num_zeros"):
            assert getattr(a, field) == getattr(b, field), (where, field)
        # Sums of floats taken in another order differ in the last bits. An
        # inf among the values makes both NaN.
        for field in ("mean", "std_dev"):
            x, y = getattr(a, field), getattr(b, field)
            assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9), (
                where,
                field,
                getattr(a, field),
                getattr(b, field),
            )
        assert a.min <= b.median <= a.max, (where, "median")
        _assert_histograms_match(where, a.histograms, b.histograms, a.min, a.max)
    elif kind == "string_stats":
        a, b = local.string_stats, multi.string_stats
        _assert_common_stats_match(where, a.common_stats, b.common_stats)
        assert a.unique == b.unique, (where, "unique")
        assert a.avg_length == b.avg_length, (where, "avg_length")
        assert list(a.top_values) == list(b.top_values), (where, "top_values")
        assert a.rank_histogram == b.rank_histogram, (where, "rank_histogram")
    else:
        assert local == multi, where
