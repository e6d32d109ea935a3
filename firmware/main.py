# Run at boot. The collector lives in app.py, deployed compiled (.mpy): compiling it here,
# from source, would take more heap than the device has to spare.
import app

app.run()
