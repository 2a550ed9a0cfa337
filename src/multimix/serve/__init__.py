"""``multimix serve``: the web service and its page (see :mod:`multimix.serve.app`)."""
