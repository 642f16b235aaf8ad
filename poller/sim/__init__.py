"""A local emulator of ServiceStage's "Obtaining Job Details" API, driven by scenarios.

Start one in-process with :func:`running_sim`, or from the shell with ``poller sim``.
"""

from poller.sim._fields import ScenarioError
from poller.sim.aksk import AkSkVerifier
from poller.sim.app import create_app
from poller.sim.auth import DEFAULT_TOKEN, RequestVerifier, TokenVerifier, Verdict, token_auth
from poller.sim.config import DEFAULT_PROJECT_ID, SimConfig, config_from_scenario
from poller.sim.credentials import IamUser
from poller.sim.faults import FaultConfig, FaultKind, parse_faults
from poller.sim.generator import generate
from poller.sim.scenario import (
    JobSpec,
    Scenario,
    Step,
    TaskSpec,
    example_scenario_path,
    load_scenario,
    parse_job,
    parse_scenario,
    scenario_to_dict,
)
from poller.sim.server import SimHandle, running_sim, serve_forever
from poller.sim.state import DuplicateJobError
from poller.sim.tokens import IssuedTokens, IssuedTokenVerifier

__all__ = [
    "DEFAULT_PROJECT_ID",
    "DEFAULT_TOKEN",
    "AkSkVerifier",
    "DuplicateJobError",
    "FaultConfig",
    "FaultKind",
    "IamUser",
    "IssuedTokenVerifier",
    "IssuedTokens",
    "JobSpec",
    "RequestVerifier",
    "Scenario",
    "ScenarioError",
    "SimConfig",
    "SimHandle",
    "Step",
    "TaskSpec",
    "TokenVerifier",
    "Verdict",
    "config_from_scenario",
    "create_app",
    "example_scenario_path",
    "generate",
    "load_scenario",
    "parse_faults",
    "parse_job",
    "parse_scenario",
    "running_sim",
    "scenario_to_dict",
    "serve_forever",
    "token_auth",
]
