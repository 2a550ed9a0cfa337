"""multimix.methods"""
