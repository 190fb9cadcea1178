// Images on canvases: a chosen file drawn to fit, with the face box and landmarks the
// service answered, in the uploaded image's pixels.

/** Netpbm (PGM/PPM, binary or plain): browsers cannot show them, the service takes them. */
function decodeNetpbm(bytes) {
  let at = 0;
  const token = () => {
    for (;;) {
      while (at < bytes.length && /\s/.test(String.fromCharCode(bytes[at]))) at += 1;
      if (bytes[at] !== 0x23) break; // '#': a comment to the end of the line
      while (at < bytes.length && bytes[at] !== 0x0a) at += 1;
    }
    let text = "";
    while (at < bytes.length && !/\s/.test(String.fromCharCode(bytes[at]))) {
      text += String.fromCharCode(bytes[at]);
      at += 1;
    }
    return text;
  };
  const magic = token();
  if (!["P2", "P3", "P5", "P6"].includes(magic)) return null;
  const width = Number(token());
  const height = Number(token());
  const max = Number(token());
  const channels = magic === "P3" || magic === "P6" ? 3 : 1;
  const count = width * height * channels;
  const wide = max > 255;
  const values = new Array(count);
  if (magic === "P5" || magic === "P6") {
    at += 1; // the single whitespace after the header
    for (let i = 0; i < count; i += 1) {
      values[i] = wide ? (bytes[at + 2 * i] << 8) | bytes[at + 2 * i + 1] : bytes[at + i];
    }
  } else {
    for (let i = 0; i < count; i += 1) values[i] = Number(token());
  }
  const image = new ImageData(width, height);
  for (let p = 0; p < width * height; p += 1) {
    for (let c = 0; c < 3; c += 1) {
      const value = values[p * channels + (channels === 3 ? c : 0)];
      image.data[4 * p + c] = Math.round((255 * value) / max);
    }
    image.data[4 * p + 3] = 255;
  }
  return image;
}

/** A drawable (ImageBitmap or a canvas) of an image file, whatever its format. */
export async function loadImage(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const netpbm = bytes[0] === 0x50 ? decodeNetpbm(bytes) : null;
  if (netpbm) {
    const canvas = document.createElement("canvas");
    canvas.width = netpbm.width;
    canvas.height = netpbm.height;
    canvas.getContext("2d").putImageData(netpbm, 0, 0);
    return canvas;
  }
  return createImageBitmap(new Blob([bytes]));
}

/**
 * Draws `image` on `canvas`, scaled to fit `maxSide`, and returns the scale; `faces`
 * (optional) are {box: [x1, y1, x2, y2], landmarks, label, colour} in image pixels.
 */
export function drawImage(canvas, image, faces = [], maxSide = 360) {
  const scale = Math.min(maxSide / image.width, maxSide / image.height, 4);
  canvas.width = Math.round(image.width * scale);
  canvas.height = Math.round(image.height * scale);
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = scale < 1;
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  for (const face of faces) {
    const [x1, y1, x2, y2] = face.box.map((v) => v * scale);
    const colour = face.colour || "#22c55e";
    context.lineWidth = 2;
    context.strokeStyle = colour;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    for (const [x, y] of face.landmarks || []) {
      context.fillStyle = "#f59e0b";
      context.beginPath();
      context.arc(x * scale, y * scale, 2.5, 0, 2 * Math.PI);
      context.fill();
    }
    if (face.label) {
      context.font = "12px system-ui, sans-serif";
      const width = context.measureText(face.label).width + 8;
      const top = Math.max(0, y1 - 18);
      context.fillStyle = colour;
      context.fillRect(x1, top, width, 18);
      context.fillStyle = "#0b1020";
      context.fillText(face.label, x1 + 4, top + 13);
    }
  }
  // what was drawn, in image pixels, for whoever checks the page (the browser tests)
  canvas.dataset.faces = JSON.stringify(faces.map((face) => face.box));
  canvas.dataset.imageWidth = String(image.width);
  return scale;
}
