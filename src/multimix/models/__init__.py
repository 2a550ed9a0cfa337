"""multimix.models"""
