"""Hydra's own launcher conformance suites, as Hydra's launcher plugins run them, on gptx's launchers.

LauncherTestSuite, BatchedSweeperTestSuite and IntegrationTestSuite (hydra.test_utils.launcher_common_tests)
drive Hydra's test apps through a launcher and check what it reports back: each job's config, overrides,
task name and working directory (the job's own: its run folder under hydra.job.chdir=true), for jobs that
ran, were skipped or died. `local_gpus` runs in its CPU mode here; the SLURM launcher on the local SLURM.
"""

from __future__ import annotations

import pytest
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite

from gptx.config import CONF_DIR


@pytest.fixture(autouse=True)
def hydras_default_version_base(hydra_restore_singletons):
    """Hydra's suites expect its default version base (jobs change directory): other tests of this suite
    compose with version_base="1.3", which would otherwise stay set in this process."""
    from hydra.version import _UNSPECIFIED_, VersionBase

    VersionBase.instance().version_base = _UNSPECIFIED_

# Hydra's test apps have their own primary config: gptx's config folder joins the search path for the
# launcher presets it holds.
SEARCH = f"hydra.searchpath=[file://{CONF_DIR}]"
LOCAL = [SEARCH, "hydra.launcher.gpus=[]", "hydra.launcher.max_parallel=2"]


@pytest.mark.parametrize("launcher_name, overrides", [("local_gpus", LOCAL)])
class TestLocalGpusLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("local_gpus", [*LOCAL, "hydra.sweeper.max_batch_size=2"])])
class TestLocalGpusBatched(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=local_gpus", *LOCAL])])
class TestLocalGpusIntegration(IntegrationTestSuite):
    pass


# The one-GPU SLURM preset fitted to the CPU-only local node (as tests/test_slurm.py runs it).
SLURM = [SEARCH, "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.timeout_min=5"]


def _on_slurm(cls):
    """Mark a suite `slurm` and run it on the local SLURM (skipped without one, failed under CI)."""
    from test_slurm import needs_slurm

    return pytest.mark.slurm(needs_slurm(cls))


@_on_slurm
@pytest.mark.parametrize("launcher_name, overrides", [("slurm_gpu", SLURM)])
class TestSlurmLauncher(LauncherTestSuite):
    pass


@_on_slurm
@pytest.mark.parametrize("launcher_name, overrides", [("slurm_gpu", [*SLURM, "hydra.sweeper.max_batch_size=2"])])
class TestSlurmBatched(BatchedSweeperTestSuite):
    pass


@_on_slurm
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=slurm_gpu", *SLURM])])
class TestSlurmIntegration(IntegrationTestSuite):
    pass
