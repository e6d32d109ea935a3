# Run at boot. The collector lives in app.py, deployed compiled (.mpy): compiling it here,
# from source, would take more heap than the device has to spare. The first line comes
# before anything is loaded, so the console shows every boot, even one cut at once.
print("ecoin collector starting")
import app  # noqa: E402

app.run()
