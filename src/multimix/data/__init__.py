"""multimix.data"""
