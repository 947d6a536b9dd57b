import evaluate
from evaluate.utils import launch_gradio_widget


module = evaluate.load("clsgen/auroc_alignment")
launch_gradio_widget(module)
