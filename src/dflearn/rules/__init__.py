"""Learning rules, one file each, all behind one registry (`RULES`).

A new rule: subclass `Rule` (the contract, `dflearn.feedback.rule`) in a new file,
decorate it with `@register_rule`, import the file below. A rule whose step differs
overrides a piece of the step or `step` itself (pepita: two forward passes and no
backward; localheads: a loss per block); nothing else changes.
"""
from . import bp, dfa, dkp, drtp, las, ltas, sdfa, shallow  # noqa: F401  (register)
from . import brsf, fa, frsf, kp, usf, wm  # noqa: F401  (register: sequential feedback)
from . import localheads, pepita  # noqa: F401  (register: rules with their own step)
from .base import RULES, Rule, make_rule, register_rule, rule_options
from .bp import BP
from .dfa import DFA
from .dkp import DKP
from .drtp import DRTP
from .las import LAS
from .ltas import LTAS
from .sdfa import SparseDFA
from .shallow import Shallow

__all__ = ["BP", "DFA", "DKP", "DRTP", "LAS", "LTAS", "RULES", "Rule", "Shallow", "SparseDFA",
           "make_rule", "register_rule", "rule_options"]
