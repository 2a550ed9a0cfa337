"""multimix.engine"""
