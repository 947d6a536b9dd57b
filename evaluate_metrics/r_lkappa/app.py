import evaluate
from evaluate.utils import launch_gradio_widget


module = evaluate.load("clsgen/r_lkappa")
launch_gradio_widget(module)
