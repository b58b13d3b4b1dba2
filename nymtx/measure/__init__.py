"""nym-measure: the anonymity the running design gives, scored against the truth.

:mod:`trace` (the adversary's view and the truth, kept apart), :mod:`sim`
(a model of the protocol for networks this machine cannot hold),
:mod:`attacks` (a global passive adversary's attacks and their scoring),
:mod:`checks` (the design's own promises), :mod:`report` (the folder a
person reads) and :mod:`cli` (the command).
"""
