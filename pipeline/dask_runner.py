"""Apache Beam's Dask runner, adapted so that TFX executors can start it.

Two changes to Beam 2.59's `apache_beam.runners.dask.dask_runner.DaskRunner`:

- It builds its `distributed.Client` from every non-default pipeline option,
  so the options that TFX adds (``--runner``, ``--extra_package`` for the
  user-module wheel, ``--labels``) reach ``Client()`` and raise a TypeError.
  `DaskRunner` below passes only the ``--dask_*`` options on.
- Its result calls ``Client.wait_for_workers()`` without ``n_workers``,
  which distributed 2024.8 requires. `DaskRunnerResult` waits for one worker.

Beam finds a runner outside its own registry by its full class path:

    --runner=pipeline.dask_runner.DaskRunner
    --dask_client_address=tcp://127.0.0.1:8786

NOTE: the Dask runner of Beam 2.59 translates only Create, ParDo, Map,
GroupByKey and Flatten, and ignores side inputs, tagged outputs and the DoFn
lifecycle. No recguard stage runs on it, and docs/scaling.md names where each
one fails.
"""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.dask import dask_runner
from apache_beam.runners.runner import PipelineState


def _dask_option_names() -> set[str]:
    parser = argparse.ArgumentParser()
    dask_runner.DaskOptions._add_argparse_args(parser)  # noqa: SLF001 - the only list of them
    return {action.dest for action in parser._actions if action.dest != "help"}  # noqa: SLF001


def dask_only_options(options: PipelineOptions) -> PipelineOptions:
    """Returns new options that contain only the Dask options set in `options`."""
    names = _dask_option_names()
    set_options = options.get_all_options(drop_default=True)
    return PipelineOptions(flags=[], **{k: v for k, v in set_options.items() if k in names})


class DaskRunnerResult(dask_runner.DaskRunnerResult):
    """Beam's Dask result, waiting for at least one worker before it gathers."""

    def wait_until_finish(self, duration=None) -> str:
        """Waits for every output. `duration` is in milliseconds, as in Beam."""
        timeout = duration / 1000 if duration is not None else None
        try:
            self.client.wait_for_workers(n_workers=1, timeout=timeout)
            self.client.gather(self.futures, errors="raise")
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        self._state = PipelineState.DONE
        return self._state


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner, given only the Dask options of the pipeline."""

    def run_pipeline(self, pipeline, options):
        result = super().run_pipeline(pipeline, dask_only_options(options))
        return DaskRunnerResult(result.client, result.futures)
