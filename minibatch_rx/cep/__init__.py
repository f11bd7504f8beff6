"""Complex event processing: patterns over streams, with Apache Flink's CEP semantics.

Build a pattern with :class:`Pattern`, try it on a list with
:meth:`Pattern.evaluate`, and run it on a stream with ``.match(pattern)``.

>>> from minibatch_rx.cep import Pattern
>>> p = (Pattern.begin('fail').where(lambda e: e['ok'] is False).times(3).consecutive()
...      .next('success').where(lambda e: e['ok'] is True))
>>> logins = [{'ok': False}, {'ok': False}, {'ok': False}, {'ok': True}]
>>> len(p.evaluate(logins).matches)
1
"""

from minibatch_rx.cep.match import Evaluation, Match, evaluate
from minibatch_rx.cep.nfa import Context, PatternError
from minibatch_rx.cep.pattern import AfterMatch, Pattern

__all__ = ["AfterMatch", "Context", "Evaluation", "Match", "Pattern", "PatternError", "evaluate"]
