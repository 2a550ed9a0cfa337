"""multimix.explain"""
