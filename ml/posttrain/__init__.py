"""Post-training data (Llama 3 paper §4): records and held-out splits (``records``), verified synthetic
generators — math with every step checked (``math_synth``), code tasks judged by running their unit tests
(``code_synth``) in a locked-down process (``sandbox``); rejection sampling (``rejection``) and tone cleaning
(``cleaning``). The objectives themselves are training tasks
(ml/train/tasks/{sft,reward,dpo}.py); the chat format is ml/tokens/chat.py."""
