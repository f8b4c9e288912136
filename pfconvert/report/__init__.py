"""pfconvert.report"""
