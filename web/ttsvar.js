// Frontend extension of comfyui-ttsvar. ComfyUI serves this folder under
// /extensions/comfyui-ttsvar/, two levels below the frontend's scripts/.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "ttsvar.core",
});
