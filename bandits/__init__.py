"""Bandit learning core: policies, context encoding, propensities, rewards and policy state.

Pure Python on numpy, scipy and MABWiser; MABWiser objects never leave this
package. The service builds a ``Policy`` from an experiment's ``PolicySpec`` and
``FeatureSpec`` list, asks it to ``decide`` (each decision carries its exact
propensity), trains it with ``update`` or ``Policy.train``, and stores
``to_state()`` as JSON.
"""

from bandits.encoding import Encoder
from bandits.policy import Decision, Policy
from bandits.rewards import OutcomeSummary, RewardDefinition, reward_for, rewards_for

__all__ = [
    "Decision",
    "Encoder",
    "OutcomeSummary",
    "Policy",
    "RewardDefinition",
    "reward_for",
    "rewards_for",
]
