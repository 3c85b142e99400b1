"""Recovery after (or with) pruning: none, lora, dora, masked_lora, losa (RestoreLCC plugs in here too).

The contract is `repro.recovery.base.Recovery`; fine-tuning is `repro.recovery.training.fine_tune`; the data is
`repro.data.instruct.load_instruction_data`. One module per method.
"""
