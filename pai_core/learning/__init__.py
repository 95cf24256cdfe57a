"""Memory that learns from chat (issue 13): secrets never learned (secrets), explicit commands and
rule-based extraction (rules), model-based extraction in one structured call (model), consolidation
with history (service), and the job that carries a turn off the request path (jobs).

Nothing is imported here: the chat service imports the parts it needs without pulling in the rest."""
