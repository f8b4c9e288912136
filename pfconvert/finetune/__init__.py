"""pfconvert.finetune"""
