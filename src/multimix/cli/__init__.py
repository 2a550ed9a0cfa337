"""multimix.cli"""
