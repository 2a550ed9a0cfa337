"""multimix.report"""
