import evaluate
from evaluate.utils import launch_gradio_widget


module = evaluate.load("clsgen/rli")
launch_gradio_widget(module)
